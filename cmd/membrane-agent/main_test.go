package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad cleanup flags are refused before anything is touched, naming the flag.
func TestCleanupFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"cleanup", "--bpf-pin-dir=relative"}, "--bpf-pin-dir"},
		{[]string{"cleanup", "--bpf-pin-dir=/sys/fs/bpf/membrane", "--state-dir=state"}, "--state-dir"},
		{[]string{"cleanup", "--no-such-flag"}, "no-such-flag"},
		{[]string{"cleanup", "extra"}, "unexpected arguments"},
	} {
		var stderr bytes.Buffer
		err := run(t.Context(), append([]string{"membrane-agent"}, c.args...), &stderr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
