package main

import (
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/membrane-mesh/membrane/mesh/flow"
)

// TestObserveFilterFlags: every filter key is a documented, repeatable
// flag, and bad values fail before any cluster is asked, naming the flag.
func TestObserveFilterFlags(t *testing.T) {
	help := observeFilterHelp()
	cmd := newObserveCommand(&globals{stdout: io.Discard, stderr: io.Discard})
	for _, key := range flow.FilterKeys {
		f := cmd.Flags().Lookup(key)
		switch {
		case f == nil:
			t.Errorf("no --%s flag", key)
		case help[key] == "" || f.Usage != help[key]:
			t.Errorf("--%s: help %q", key, f.Usage)
		case f.Value.Type() != "stringArray":
			t.Errorf("--%s is a %s, want a repeatable stringArray", key, f.Value.Type())
		}
	}
	nowhere := filepath.Join(t.TempDir(), "no-kubeconfig")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--http-status", "4x"}, `--http-status "4x": want a code like 404 or a class like 5+`},
		{[]string{"--http-method", "GET /"}, `--http-method "GET /": not an HTTP method`},
		{[]string{"--http-path", "(v1"}, `--http-path "(v1": not a regular expression (RE2)`},
		// Good filters get as far as looking for the cluster.
		{[]string{"--http-status", "5+", "--http-status", "403", "--http-method", "get", "--http-path", "^/api/", "--protocol", "http"},
			"find the cluster"},
	} {
		cmd := newObserveCommand(&globals{stdout: io.Discard, stderr: io.Discard, kubeconfig: nowhere})
		cmd.SetArgs(tc.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("observe %q = %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}
