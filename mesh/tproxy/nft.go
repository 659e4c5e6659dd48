package tproxy

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

func nftTable() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
}

// replaceTable replaces the whole table in one batch: the kernel applies
// the batch atomically, so packets see either the old or the new rules.
// The leading add makes the delete succeed when the table does not exist.
func replaceTable(c Config) error {
	conn, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := nftTable()
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	ch := conn.AddChain(&nftables.Chain{
		Name:     ChainName,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookPrerouting,
		Priority: nftables.ChainPriorityMangle,
	})
	for _, exprs := range ruleExprs(c) {
		conn.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: exprs})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("replace nftables table ip %s: %w", TableName, err)
	}
	return nil
}

// deleteTable deletes the table if it exists, in one batch; deleted says
// it existed.
func deleteTable() (deleted bool, err error) {
	conn, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	t := nftTable()
	if _, err := conn.ListTableOfFamily(TableName, t.Family); err == nil {
		deleted = true
	}
	conn.AddTable(t)
	conn.DelTable(t)
	if err := conn.Flush(); err != nil {
		return false, fmt.Errorf("delete nftables table ip %s: %w", TableName, err)
	}
	return deleted, nil
}

// ruleExprs returns the chain's rules, in order:
//
//	meta l4proto tcp socket transparent 1 meta mark set mark & ~MarkMask | LocalMark
//	meta mark 0 accept
//	meta mark ToProxyMark meta l4proto tcp tproxy ip to ListenAddr:Port meta mark set LocalMark
//	(the same for each Extra listener and each of its protocols)
//
// The first routes replies for the proxy's transparent upstream sockets
// (bound to addresses that are not local) to the local table; the third
// hands a marked packet to the listener (an established transparent socket
// of its connection if there is one) and keeps the mark local. tproxy ends
// the rule when it finds no socket, so the mark is only rewritten for
// packets that have one. Every forwarded packet of the node passes the
// chain, and nearly all of them carry no mark: the second rule lets them
// go after one comparison instead of one per listener (no to-proxy mark is
// 0, so the listeners' rules could not match them).
func ruleExprs(c Config) [][]expr.Any {
	tcp := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}
	returnToProxy := append(append([]expr.Any{}, tcp...),
		&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		// (mark & ~MarkMask) ^ LocalMark; LocalMark is within MarkMask, so ^ is |.
		&expr.Bitwise{
			SourceRegister: 1,
			DestRegister:   1,
			Len:            4,
			Mask:           binaryutil.NativeEndian.PutUint32(^c.MarkMask),
			Xor:            binaryutil.NativeEndian.PutUint32(c.LocalMark),
		},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	)
	unmarked := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(0)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	out := [][]expr.Any{returnToProxy, unmarked}
	if c.Port != 0 {
		out = append(out, toProxyExprs(c, c.ToProxyMark, unix.IPPROTO_TCP, c.Port))
	}
	for _, l := range c.Extra {
		if l.TCP {
			out = append(out, toProxyExprs(c, l.ToProxyMark, unix.IPPROTO_TCP, l.Port))
		}
		if l.UDP {
			out = append(out, toProxyExprs(c, l.ToProxyMark, unix.IPPROTO_UDP, l.Port))
		}
	}
	return out
}

// toProxyExprs: meta mark <mark> meta l4proto <proto> tproxy ip to ListenAddr:<port> meta mark set LocalMark.
func toProxyExprs(c Config, mark uint32, proto byte, port uint16) []expr.Any {
	addr := c.ListenAddr.As4()
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(mark)},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Immediate{Register: 1, Data: addr[:]},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.TProxy{Family: unix.NFPROTO_IPV4, TableFamily: unix.NFPROTO_IPV4, RegAddr: 1, RegPort: 2},
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(c.LocalMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}
