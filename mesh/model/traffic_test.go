package model

import (
	"encoding/json"
	"testing"
)

func TestProtocolText(t *testing.T) {
	for _, p := range []Protocol{AnyProtocol, ICMP, TCP, UDP, SCTP, 47} {
		b, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Protocol
		if err := back.UnmarshalText(b); err != nil || back != p {
			t.Errorf("%v: round trip through %q gave %v, %v", uint8(p), b, back, err)
		}
	}
	for in, want := range map[string]Protocol{"": AnyProtocol, "any": AnyProtocol, "tcp": TCP, "47": 47} {
		if got, err := ParseIPProtocol(in); err != nil || got != want {
			t.Errorf("ParseIPProtocol(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseIPProtocol("GRE"); err == nil {
		t.Error("ParseIPProtocol(GRE): no error")
	}
	if got, err := ParseProtocol(""); err != nil || got != TCP {
		t.Errorf("ParseProtocol(\"\") = %v, %v; want TCP (a Service port's default)", got, err)
	}
	if _, err := ParseProtocol("ICMP"); err == nil {
		t.Error("ParseProtocol(ICMP): no error; Services have no ICMP ports")
	}
}

func TestTCPFlagsJSON(t *testing.T) {
	b, err := json.Marshal(SYN | ACK | FIN)
	if err != nil || string(b) != `["SYN","ACK","FIN"]` {
		t.Errorf("marshal = %s, %v", b, err)
	}
	var f TCPFlags
	if err := json.Unmarshal(b, &f); err != nil || f != SYN|ACK|FIN {
		t.Errorf("unmarshal = %v, %v", f, err)
	}
	if err := json.Unmarshal([]byte(`["SYN","NOPE"]`), &f); err == nil {
		t.Error("unknown flag: no error")
	}
	if got := (SYN | ACK).String(); got != "SYN, ACK" {
		t.Errorf("String = %q", got)
	}
}
