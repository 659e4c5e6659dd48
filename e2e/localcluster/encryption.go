package localcluster

import (
	"context"
	"fmt"
	"log/slog"
)

// EncryptionWireGuard is the value of Options.Encryption (and of
// `membrane dev up --encryption`) that turns WireGuard on.
const EncryptionWireGuard = "wireguard"

// Values of Options.IdentityProvider.
const (
	IdentityBuiltin = "builtin"
	IdentitySPIRE   = "spire"
)

// SetEncryption sets the encryption mode of a cluster's Membrane ("" for
// off, or "wireguard") by a helm upgrade of its release, and waits until the
// agent DaemonSet has rolled out: pods keep running; the agents converge the
// datapath. Later upgrades (`membrane dev helm -- upgrade`) keep the mode.
func SetEncryption(ctx context.Context, log *slog.Logger, toolsDir, cluster, mode string) error {
	if mode != "" && mode != EncryptionWireGuard {
		return fmt.Errorf("encryption %q: must be %q or empty", mode, EncryptionWireGuard)
	}
	s, err := Load(cluster)
	if err != nil {
		return err
	}
	if s.NoMembrane {
		return fmt.Errorf("cluster %q was started with --no-membrane: it has no agents to encrypt", cluster)
	}
	s.Encryption = mode
	if err := writeClusterValues(s); err != nil {
		return err
	}
	if err := s.save(); err != nil {
		return err
	}
	// The values files come first, so a --set of up's that sets encryption
	// would win over them.
	set := "encryption.enabled=false"
	if mode != "" {
		set = "encryption.enabled=true,encryption.type=" + mode
	}
	if _, err := Helm(ctx, toolsDir, cluster, "upgrade", "--set", set); err != nil {
		return err
	}
	c, err := Client(s.Layout().Kubeconfig())
	if err != nil {
		return err
	}
	if err := waitAvailable(ctx, c, s, workload{"daemonset", chartNamespace, agentDaemonSet}); err != nil {
		return err
	}
	log.Info("encryption set", "cluster", cluster, "encryption", mode)
	return nil
}
