package membrane

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestFlagsAccepted runs the real membrane-agent and membrane-operator with
// the arguments the chart renders for every golden case. Both parse their
// flags and validate their configuration before they do anything else, and
// without a kubeconfig or the in-cluster variables they then stop at the
// Kubernetes client config: reaching that error proves every flag exists
// and every value is valid.
func TestFlagsAccepted(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds membrane-agent and membrane-operator")
	}
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin+"/", "../../cmd/membrane-agent", "../../cmd/membrane-operator")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cases, err := filepath.Glob("testdata/*.values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range cases {
		name := strings.TrimSuffix(filepath.Base(in), ".values.yaml")
		t.Run(name, func(t *testing.T) {
			values, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			manifest, err := render(t, string(values))
			if err != nil {
				t.Fatal(err)
			}
			objs, err := Objects(manifest)
			if err != nil {
				t.Fatal(err)
			}
			ran := 0
			for _, o := range objs {
				var w appsv1.DaemonSet // a Deployment's pod template decodes alike
				if (o.Kind != "DaemonSet" && o.Kind != "Deployment") || (o.Name != "membrane-agent" && o.Name != "membrane-operator") {
					continue
				}
				if err := yaml.Unmarshal([]byte(o.YAML), &w); err != nil {
					t.Fatalf("%s %s: %v", o.Kind, o.Name, err)
				}
				c := w.Spec.Template.Spec.Containers[0]
				if len(c.Command) != 1 || c.Command[0] != o.Name {
					t.Fatalf("%s %s: command %q, want [%s]", o.Kind, o.Name, c.Command, o.Name)
				}
				args := make([]string, len(c.Args))
				for i, a := range c.Args {
					args[i] = strings.ReplaceAll(a, "$(NODE_NAME)", "node1")
				}
				cmd := exec.CommandContext(ctx, filepath.Join(bin, o.Name), args...)
				cmd.Env = []string{"PATH=" + os.Getenv("PATH")} // no KUBERNETES_SERVICE_*
				out, err := cmd.CombinedOutput()
				if err == nil || !strings.Contains(string(out), "kubernetes client config") {
					t.Errorf("%s %s: want a stop at the Kubernetes client config, got %v:\n%s", o.Name, strings.Join(args, " "), err, out)
				}
				ran++
			}
			if ran != 2 {
				t.Errorf("ran %d of membrane-agent and membrane-operator", ran)
			}
		})
	}
}
