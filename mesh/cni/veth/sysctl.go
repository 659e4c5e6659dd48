package veth

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// Sysctls are per network namespace; these act on the calling thread's.
const (
	ipForwardPath = "/proc/sys/net/ipv4/ip_forward"
	confDir       = "/proc/sys/net/ipv4/conf"
)

// enableForwarding turns on IPv4 forwarding for the netns and for ifName.
func enableForwarding(ifName string) error {
	for _, p := range []string{ipForwardPath, filepath.Join(confDir, ifName, "forwarding")} {
		if err := setSysctl(p, "1"); err != nil {
			return err
		}
	}
	return nil
}

// acceptLocal lets ifName receive packets whose source is an address of
// the node: the node's own connections to the pod (the Gateways', from the
// node's ingress address) that the policy program hands back to the node's
// L7 proxy arrive on the host veth. A pod cannot use it to pose as the
// node: the policy program drops what the pod sends from another address.
func acceptLocal(ifName string) error {
	return setSysctl(filepath.Join(confDir, ifName, "accept_local"), "1")
}

func forwardingEnabled(ifName string) (bool, error) {
	for _, p := range []string{ipForwardPath, filepath.Join(confDir, ifName, "forwarding")} {
		v, err := os.ReadFile(p)
		if err != nil {
			return false, fmt.Errorf("read %s: %w", p, err)
		}
		if string(bytes.TrimSpace(v)) != "1" {
			return false, nil
		}
	}
	return true, nil
}

func setSysctl(path, value string) error {
	cur, err := os.ReadFile(path)
	if err == nil && string(bytes.TrimSpace(cur)) == value {
		return nil
	}
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set %s=%s: %w", path, value, err)
	}
	return nil
}
