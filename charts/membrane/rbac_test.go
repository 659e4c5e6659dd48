package membrane

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// use names the code that needs a permission: a function (Func) or method
// (Type.Method) in a file, and a piece of its body that makes or causes the
// call. The file is relative to the repository root, or starts with a
// module path (k8s.io/client-go/...) for library code our calls go
// through.
type use struct{ file, fn, evidence string }

// ruleUses justifies every permission the chart's cluster roles grant, as
// role, apiGroup/resource and verb ("" is the core group). The test below
// checks both ways: every granted permission is listed here, every listed
// one is granted, and each listed function exists and holds its evidence.
//
// Why this direction: a grant nobody needs is the failure least privilege
// is about, and only a list like this can catch it statically. The other
// direction, a call the roles do not allow, is caught where it happens:
// the local cluster binds these very roles to the agents and the operator
// the end-to-end tests run, so a missing grant fails those tests with a
// Forbidden error. Checking the named code for its evidence, not only for
// its name, keeps the list from going stale when the code moves or stops
// making the call.
var ruleUses = map[string][]use{
	// membrane-agent: informers (list, watch).
	"membrane-agent /nodes list,watch": {
		{"mesh/k8s/services.go", "NewServiceSource", "Core().V1().Nodes().Informer()"},
		{"mesh/k8s/policy.go", "NewPolicySource", "Core().V1().Nodes().Informer()"},
		{"mesh/agent/encryption.go", "newEncryption", "Core().V1().Nodes()"},
	},
	"membrane-agent /services list,watch": {
		{"mesh/k8s/services.go", "NewServiceSource", "Core().V1().Services().Informer()"},
	},
	"membrane-agent /pods list,watch": {
		{"mesh/k8s/policy.go", "NewPolicySource", "Core().V1().Pods().Informer()"},
	},
	"membrane-agent /namespaces list,watch": {
		{"mesh/k8s/policy.go", "NewPolicySource", "Core().V1().Namespaces().Informer()"},
	},
	"membrane-agent discovery.k8s.io/endpointslices list,watch": {
		{"mesh/k8s/services.go", "NewServiceSource", "Discovery().V1().EndpointSlices().Informer()"},
		{"mesh/k8s/policy.go", "NewPolicySource", "Discovery().V1().EndpointSlices().Informer()"},
	},
	"membrane-agent networking.k8s.io/networkpolicies list,watch": {
		{"mesh/k8s/policy.go", "NewPolicySource", "Networking().V1().NetworkPolicies().Informer()"},
	},
	"membrane-agent membrane.io/membraneidentities list,watch": {
		{"mesh/k8s/policy.go", "NewPolicySource", "dyn.ForResource(membraneResource(identities)).Informer()"},
	},
	"membrane-agent membrane.io/membranenetworkpolicies list,watch": {
		{"mesh/k8s/policyclient.go", "typedInformer", "rc.Get().Resource(resource)"},
		{"mesh/k8s/policy.go", "NewPolicySource", "policyInformer(networkPolicies,"},
	},
	"membrane-agent membrane.io/membraneclusterwidenetworkpolicies list,watch": {
		{"mesh/k8s/policyclient.go", "typedInformer", "rc.Get().Resource(resource)"},
		{"mesh/k8s/policy.go", "NewPolicySource", "policyInformer(clusterwidePolicies,"},
	},
	// membrane-agent: its own Node.
	"membrane-agent /nodes get": {
		{"mesh/agent/encryption.go", "disableEncryption", "client.CoreV1().Nodes().Get("},
	},
	"membrane-agent /nodes patch": {
		{"mesh/agent/cleanup.go", "removeNodeAnnotations", "Nodes().Patch("},
		{"mesh/agent/encryption.go", "encryption.publish", "Nodes().Patch("},
		{"mesh/agent/proxy.go", "proxy.annotate", "Nodes().Patch("},
		{"mesh/agent/api.go", "Agent.publishAPICertificate", "Nodes().Patch("},
	},
	// membrane-agent: its API's clients, authenticated and authorized as a
	// kubelet does.
	"membrane-agent authentication.k8s.io/tokenreviews create": {
		{"mesh/agentauth/auth.go", "Auth.reviewToken", "TokenReviews().Create("},
	},
	"membrane-agent authorization.k8s.io/subjectaccessreviews create": {
		{"mesh/agentauth/auth.go", "Auth.Authorize", "SubjectAccessReviews().Create("},
	},
	// membrane-agent: Events through client-go's recorder.
	"membrane-agent /events create,patch": {
		{"mesh/agent/encryption.go", "encryption.run", "EventSinkImpl{Interface: e.client.CoreV1().Events(\"\")}"},
		{"mesh/agent/clustermesh.go", "Agent.annotationEvents", "EventSinkImpl{Interface: a.client.CoreV1().Events(\"\")}"},
		{"k8s.io/client-go/tools/record/event.go", "recordEvent", "sink.Create(event)"},
		{"k8s.io/client-go/tools/record/event.go", "recordEvent", "sink.Patch(event, patch)"},
	},

	// membrane-agent-clustermesh (a Role in the release namespace): the
	// cluster-mesh Secret, by name.
	"membrane-agent-clustermesh /secrets list,watch": {
		{"mesh/k8s/clustermesh.go", "Mesh.Run", "Core().V1().Secrets().Informer()"},
	},

	// membrane-uninstall (a Role in the release namespace, pre-delete
	// hook): stops the agents, waits for them and for the cleanup
	// DaemonSet.
	"membrane-uninstall apps/daemonsets delete": {
		{"mesh/agent/uninstall.go", "AwaitUninstallCleanup", "ds.Delete(ctx, cfg.AgentDaemonSet"},
	},
	"membrane-uninstall apps/daemonsets get": {
		{"mesh/agent/uninstall.go", "AwaitUninstallCleanup", "ds.Get(ctx, cfg.CleanupDaemonSet"},
	},
	"membrane-uninstall /pods list": {
		{"mesh/agent/uninstall.go", "AwaitUninstallCleanup", "Pods(cfg.Namespace).List("},
	},

	// membrane-operator: controller-runtime caches (list, watch).
	"membrane-operator /pods list,watch": {
		{"mesh/operator/identity.go", "IdentityController.Setup", "For(&corev1.Pod{})"},
		{"mesh/operator/identity.go", "IdentityController.inUse", "r.c.List(ctx, &pods)"},
		{"mesh/operator/ca.go", "kubePlacement.HasPod", "Pods(namespace).List(ctx"},
	},
	"membrane-operator /namespaces list,watch": {
		{"mesh/operator/identity.go", "IdentityController.Setup", "Watches(&corev1.Namespace{}"},
		{"mesh/operator/identity.go", "IdentityController.Labels", "r.c.Get(ctx, types.NamespacedName{Name: pod.Namespace}, &ns)"},
	},
	"membrane-operator /nodes list,watch": {
		{"mesh/operator/policystatus.go", "PolicyStatusController.Setup", "Watches(&corev1.Node{}"},
	},
	"membrane-operator membrane.io/membraneidentities list,watch": {
		{"mesh/operator/identity.go", "IdentityController.observe", "var list v1alpha1.MembraneIdentityList"},
	},
	"membrane-operator membrane.io/membraneidentities create": {
		{"mesh/operator/identity.go", "identityStore.Create", "s.c.Create(ctx, obj)"},
	},
	"membrane-operator membrane.io/membraneidentities delete": {
		{"mesh/operator/identity.go", "identityStore.Delete", "s.c.Delete(ctx, obj)"},
	},
	"membrane-operator membrane.io/membranenetworkpolicies list,watch": {
		{"mesh/operator/policystatus.go", "PolicyStatusController.Setup", "For(&v1alpha1.MembraneNetworkPolicy{})"},
	},
	"membrane-operator membrane.io/membraneclusterwidenetworkpolicies list,watch": {
		{"mesh/operator/policystatus.go", "PolicyStatusController.Setup", "For(&v1alpha1.MembraneClusterwideNetworkPolicy{})"},
	},
	// membrane-operator: policy conditions, one reconciler per kind.
	"membrane-operator membrane.io/membranenetworkpolicies/status update": {
		{"mesh/operator/policystatus.go", "policyStatusReconciler.Reconcile", "r.c.Status().Update(ctx, obj)"},
	},
	"membrane-operator membrane.io/membraneclusterwidenetworkpolicies/status update": {
		{"mesh/operator/policystatus.go", "policyStatusReconciler.Reconcile", "r.c.Status().Update(ctx, obj)"},
	},
	// membrane-operator: leader election.
	"membrane-operator coordination.k8s.io/leases get": {
		{"cmd/membrane-operator/main.go", "run", "LeaderElection: cfg.leaderElect"},
		{"sigs.k8s.io/controller-runtime/pkg/leaderelection/leader_election.go", "NewResourceLock", "resourcelock.LeasesResourceLock"},
		{"k8s.io/client-go/tools/leaderelection/resourcelock/leaselock.go", "LeaseLock.Get", "Leases(ll.LeaseMeta.Namespace).Get("},
	},
	"membrane-operator coordination.k8s.io/leases create": {
		{"k8s.io/client-go/tools/leaderelection/resourcelock/leaselock.go", "LeaseLock.Create", "Leases(ll.LeaseMeta.Namespace).Create("},
	},
	"membrane-operator coordination.k8s.io/leases update": {
		{"k8s.io/client-go/tools/leaderelection/resourcelock/leaselock.go", "LeaseLock.Update", "Leases(ll.LeaseMeta.Namespace).Update("},
	},
	"membrane-operator /events create,patch": {
		{"cmd/membrane-operator/main.go", "run", "LeaderElection: cfg.leaderElect"},
		{"k8s.io/client-go/tools/leaderelection/resourcelock/leaselock.go", "LeaseLock.RecordEvent", "ll.LockConfig.EventRecorder.Eventf("},
		{"sigs.k8s.io/controller-runtime/pkg/internal/recorder/recorder.go", "Provider.getBroadcaster", "EventSinkImpl{Interface: p.evtClient}"},
		{"k8s.io/client-go/tools/record/event.go", "recordEvent", "sink.Create(event)"},
		{"k8s.io/client-go/tools/record/event.go", "recordEvent", "sink.Patch(event, patch)"},
	},
	"membrane-operator /services list,watch": {
		{"mesh/operator/lbipam.go", "LBIPAMController.Setup", "Watches(&corev1.Service{}, one, builder.WithPredicates(loadBalancers()))"},
	},
	"membrane-operator /services/status update": {{"mesh/operator/lbipam.go", "LBIPAMController.Reconcile", "r.c.Status().Update(ctx, s)"}},
	"membrane-operator membrane.io/membraneloadbalancerippools list,watch": {
		{"mesh/operator/lbipam.go", "LBIPAMController.Setup", "Watches(&v1alpha1.MembraneLoadBalancerIPPool{}, one)"},
	},
	"membrane-operator membrane.io/membraneloadbalancerippools/status update": {
		{"mesh/operator/lbipam.go", "LBIPAMController.Reconcile", "r.c.Status().Update(ctx, p)"},
	},
	"membrane-agent coordination.k8s.io/leases get,create,update": {
		{"mesh/l2announce/announce.go", "Announcer.elect", "resourcelock.LeaseLock{"},
	},
}

// mutualRuleUses are the permissions granted only with
// authentication.mutual.enabled (the SPIFFE CA), as ruleUses.
var mutualRuleUses = map[string][]use{
	"membrane-operator:spiffe-ca /secrets get": {
		{"mesh/operator/ca.go", "CA.Step", "secrets.Get(ctx, c.cfg.Secret"},
		{"mesh/operator/ca.go", "CA.load", "Secrets(c.cfg.Namespace).Get(ctx, c.cfg.Secret"},
	},
	"membrane-operator:spiffe-ca /secrets create": {
		{"mesh/operator/ca.go", "CA.Step", "secrets.Create(ctx, sec"},
	},
	"membrane-operator:spiffe-ca /secrets update": {
		{"mesh/operator/ca.go", "CA.Step", "secrets.Update(ctx, sec"},
	},
	"membrane-operator:spiffe-ca /configmaps get": {
		{"mesh/operator/ca.go", "CA.publishBundle", "cms.Get(ctx, c.cfg.ConfigMap"},
	},
	"membrane-operator:spiffe-ca /configmaps create": {
		{"mesh/operator/ca.go", "CA.publishBundle", "cms.Create(ctx, cm"},
	},
	"membrane-operator:spiffe-ca /configmaps update": {
		{"mesh/operator/ca.go", "CA.publishBundle", "cms.Update(ctx, cm"},
	},
	"membrane-operator:spiffe-ca /pods get": {
		{"mesh/operator/ca.go", "kubeAgents.AgentNode", "Pods(k.namespace).Get(ctx, podName"},
	},
	"membrane-operator:spiffe-ca authentication.k8s.io/tokenreviews create": {
		{"mesh/operator/ca.go", "kubeAgents.AgentNode", "TokenReviews().Create("},
	},
	"membrane-agent:spiffe-bundle /configmaps list,watch": {
		{"mesh/agent/identity.go", "newIdentities", "id.bundle.Core().V1().ConfigMaps().Informer()"},
	},
}

// gatewayRuleUses are the permissions granted with gatewayAPI.enabled only,
// justified as in ruleUses.
var gatewayRuleUses = map[string][]use{
	"membrane-agent gateway.networking.k8s.io/gatewayclasses list,watch":           {{"gateway/node/source.go", "NewSource", `gatewayResource("v1", "gatewayclasses")`}},
	"membrane-agent gateway.networking.k8s.io/gateways list,watch":                 {{"gateway/node/source.go", "NewSource", `gatewayResource("v1", "gateways")`}},
	"membrane-agent gateway.networking.k8s.io/httproutes list,watch":               {{"gateway/node/source.go", "NewSource", `gatewayResource("v1", "httproutes")`}},
	"membrane-agent gateway.networking.k8s.io/grpcroutes list,watch":               {{"gateway/node/source.go", "NewSource", `gatewayResource("v1", "grpcroutes")`}},
	"membrane-agent gateway.networking.k8s.io/tlsroutes list,watch":                {{"gateway/node/source.go", "NewSource", `{experimental(tlsRoutesResource), &s.tlsRoutes}`}},
	"membrane-agent gateway.networking.k8s.io/tcproutes list,watch":                {{"gateway/node/source.go", "NewSource", `{experimental(tcpRoutesResource), &s.tcpRoutes}`}},
	"membrane-agent gateway.networking.k8s.io/udproutes list,watch":                {{"gateway/node/source.go", "NewSource", `{experimental(udpRoutesResource), &s.udpRoutes}`}},
	"membrane-agent gateway.networking.k8s.io/referencegrants list,watch":          {{"gateway/node/source.go", "NewSource", `gatewayResource("v1beta1", "referencegrants")`}},
	"membrane-agent gateway.networking.k8s.io/backendtlspolicies list,watch":       {{"gateway/node/source.go", "NewSource", `gatewayResource("v1", "backendtlspolicies")`}},
	"membrane-operator gateway.networking.k8s.io/backendtlspolicies list,watch":    {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1.BackendTLSPolicy{}"}},
	"membrane-operator gateway.networking.k8s.io/backendtlspolicies/status update": {{"gateway/controller/controller.go", "Reconciler.writePolicy", "r.c.Status().Update(ctx, &p)"}},
	"membrane-operator /configmaps list,watch":                                     {{"gateway/controller/controller.go", "Reconciler.Setup", "&corev1.ConfigMap{}"}},
	"membrane-operator gateway.networking.k8s.io/gatewayclasses list,watch":        {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1.GatewayClass{}"}},
	"membrane-operator gateway.networking.k8s.io/gateways list,watch":              {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1.Gateway{}"}},
	"membrane-operator gateway.networking.k8s.io/httproutes list,watch":            {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1.HTTPRoute{}"}},
	"membrane-operator gateway.networking.k8s.io/grpcroutes list,watch":            {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1.GRPCRoute{}"}},
	"membrane-operator gateway.networking.k8s.io/grpcroutes/status update":         {{"gateway/controller/controller.go", "Reconciler.Reconcile", `writeRoutes(ctx, r, "GRPCRoute"`}},
	"membrane-operator gateway.networking.k8s.io/tlsroutes list,watch":             {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1alpha2.TLSRoute{}"}},
	"membrane-operator gateway.networking.k8s.io/tlsroutes/status update":          {{"gateway/controller/controller.go", "Reconciler.Reconcile", `writeRoutes(ctx, r, "TLSRoute"`}},
	"membrane-operator gateway.networking.k8s.io/tcproutes list,watch":             {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1alpha2.TCPRoute{}"}},
	"membrane-operator gateway.networking.k8s.io/tcproutes/status update":          {{"gateway/controller/controller.go", "Reconciler.Reconcile", `writeRoutes(ctx, r, "TCPRoute"`}},
	"membrane-operator gateway.networking.k8s.io/udproutes list,watch":             {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1alpha2.UDPRoute{}"}},
	"membrane-operator gateway.networking.k8s.io/udproutes/status update":          {{"gateway/controller/controller.go", "Reconciler.Reconcile", `writeRoutes(ctx, r, "UDPRoute"`}},
	"membrane-operator gateway.networking.k8s.io/referencegrants list,watch":       {{"gateway/controller/controller.go", "Reconciler.Setup", "&gwv1beta1.ReferenceGrant{}"}},
	"membrane-operator gateway.networking.k8s.io/gatewayclasses create":            {{"gateway/controller/controller.go", "Reconciler.ensureClass", "r.c.Create(ctx, &gc)"}},
	"membrane-operator gateway.networking.k8s.io/gatewayclasses/status update":     {{"gateway/controller/controller.go", "Reconciler.writeClass", "r.c.Status().Update(ctx, &gc)"}},
	"membrane-operator gateway.networking.k8s.io/gateways/status update":           {{"gateway/controller/controller.go", "Reconciler.writeGateway", "r.c.Status().Update(ctx, &gw)"}},
	"membrane-operator gateway.networking.k8s.io/httproutes/status update":         {{"gateway/controller/controller.go", "Reconciler.Reconcile", `writeRoutes(ctx, r, "HTTPRoute"`}},
	"membrane-operator /secrets list,watch":                                        {{"gateway/controller/controller.go", "Reconciler.Setup", "&corev1.Secret{}"}},
	"membrane-agent networking.k8s.io/ingresses list,watch":                        {{"gateway/node/source.go", "NewSource", "V1().Ingresses().Informer()"}},
	"membrane-agent networking.k8s.io/ingressclasses list,watch":                   {{"gateway/node/source.go", "NewSource", "V1().IngressClasses().Informer()"}},
	"membrane-operator networking.k8s.io/ingresses list,watch":                     {{"gateway/controller/controller.go", "Reconciler.Setup", "&networkingv1.Ingress{}"}},
	"membrane-operator networking.k8s.io/ingressclasses list,watch":                {{"gateway/controller/controller.go", "Reconciler.Setup", "&networkingv1.IngressClass{}"}},
	"membrane-operator networking.k8s.io/ingresses/status update":                  {{"gateway/controller/ingress.go", "Reconciler.writeIngress", "r.c.Status().Update(ctx, &ing)"}},

	// Roles in the secrets namespace: the copies of the Secrets and
	// ConfigMaps the Gateways refer to, read by the agents (their only
	// Secrets and ConfigMaps), written by the operator.
	"membrane-agent-gateway-secrets /secrets list,watch":    {{"gateway/node/source.go", "NewSource", "NewFilteredSecretInformer(c, secretsNamespace"}},
	"membrane-agent-gateway-secrets /configmaps list,watch": {{"gateway/node/source.go", "NewSource", "NewFilteredConfigMapInformer(c, secretsNamespace"}},
	"membrane-operator-gateway-secrets /secrets create,update,delete": {
		{"gateway/controller/copies.go", "Reconciler.syncCopies", "syncObjects(ctx, r, wantS"},
		{"gateway/controller/copies.go", "syncObjects", "r.c.Create(ctx, w)"},
		{"gateway/controller/copies.go", "syncObjects", "r.c.Update(ctx, w)"},
		{"gateway/controller/copies.go", "syncObjects", "r.c.Delete(ctx, h)"},
	},
	"membrane-operator-gateway-secrets /configmaps create,update,delete": {
		{"gateway/controller/copies.go", "Reconciler.syncCopies", "syncObjects(ctx, r, wantC"},
		{"gateway/controller/copies.go", "syncObjects", "r.c.Create(ctx, w)"},
		{"gateway/controller/copies.go", "syncObjects", "r.c.Update(ctx, w)"},
		{"gateway/controller/copies.go", "syncObjects", "r.c.Delete(ctx, h)"},
	},
}

// grants expands the rendered chart's ClusterRoles and Roles into one key of
// ruleUses per role, group/resource and verb.
func grants(t *testing.T, manifest string) map[string]bool {
	t.Helper()
	objs, err := Objects(manifest)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, o := range objs {
		if o.Kind != "ClusterRole" && o.Kind != "Role" {
			continue
		}
		var role rbacv1.ClusterRole // a Role has the same fields
		if err := yaml.UnmarshalStrict([]byte(o.YAML), &role); err != nil {
			t.Fatalf("%s %s: %v", o.Kind, o.Name, err)
		}
		for i, r := range role.Rules {
			// Resource names only narrow a rule: it is checked as if it
			// had none.
			if len(r.NonResourceURLs) > 0 || slices.Contains(r.Verbs, "*") || slices.Contains(r.Resources, "*") || slices.Contains(r.APIGroups, "*") {
				t.Errorf("%s %s rule %d: wildcards and non-resource URLs are not checked here: %+v", o.Kind, o.Name, i, r)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out[o.Name+" "+g+"/"+res+" "+v] = true
					}
				}
			}
		}
	}
	return out
}

// TestRBACRulesUsed checks that every permission of the chart's cluster
// roles is needed by the code named in ruleUses, with the default values
// and with every optional feature on.
func TestRBACRulesUsed(t *testing.T) {
	expand := func(uses ...map[string][]use) map[string]bool {
		want := map[string]bool{}
		for _, m := range uses {
			for key := range m {
				f := strings.Fields(key)
				if len(f) != 3 {
					t.Fatalf("ruleUses key %q: want role, group/resource and verbs", key)
				}
				for _, v := range strings.Split(f[2], ",") {
					want[f[0]+" "+f[1]+" "+v] = true
				}
			}
		}
		return want
	}
	for values, want := range map[string]map[string]bool{
		"{}": expand(ruleUses),
		"{encryption: {enabled: true}, prometheus: {enabled: true}, l7Proxy: false}": expand(ruleUses),
		"{gatewayAPI: {enabled: true}}":                                              expand(ruleUses, gatewayRuleUses),
		"{authentication: {mutual: {enabled: true}}}":                                expand(ruleUses, mutualRuleUses),
	} {
		manifest, err := render(t, values)
		if err != nil {
			t.Fatal(err)
		}
		got := grants(t, manifest)
		for _, g := range sortedKeys(got) {
			if !want[g] {
				t.Errorf("values %s: the chart grants %q, which ruleUses does not justify: name the code that needs it, or remove the grant", values, g)
			}
		}
		for _, w := range sortedKeys(want) {
			if !got[w] {
				t.Errorf("values %s: ruleUses lists %q, which the chart does not grant", values, w)
			}
		}
	}
	modDirs := map[string]string{}
	all := maps.Clone(ruleUses)
	maps.Copy(all, mutualRuleUses)
	maps.Copy(all, gatewayRuleUses)
	for _, key := range sortedKeys(all) {
		for _, u := range all[key] {
			path := filepath.Join("..", "..", filepath.FromSlash(u.file))
			if mod, rest, ok := moduleFile(u.file); ok {
				dir, ok := modDirs[mod]
				if !ok {
					dir = moduleDir(t, mod)
					modDirs[mod] = dir
				}
				path = filepath.Join(dir, filepath.FromSlash(rest))
			}
			body, err := funcBody(path, u.fn)
			if err != nil {
				t.Errorf("%s: %s:%s: %v", key, u.file, u.fn, err)
				continue
			}
			if !strings.Contains(squash(body), squash(u.evidence)) {
				t.Errorf("%s: %s:%s does not contain %q: does it still need the permission?", key, u.file, u.fn, u.evidence)
			}
		}
	}
}

// moduleFile splits a file of a dependency into its module path and the
// path inside it; false for a file of this repository.
func moduleFile(file string) (mod, rest string, ok bool) {
	for _, m := range []string{"k8s.io/client-go", "sigs.k8s.io/controller-runtime"} {
		if r, ok := strings.CutPrefix(file, m+"/"); ok {
			return m, r, true
		}
	}
	return "", "", false
}

// moduleDir is the directory of the version of mod go.mod requires.
func moduleDir(t *testing.T, mod string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", mod, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		t.Fatalf("go list -m %s: module not downloaded (go mod download)", mod)
	}
	return dir
}

// funcBody returns the source of the body of fn ("Func" or "Type.Method")
// in the Go file at path.
func funcBody(path, fn string) (string, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	if err != nil {
		return "", err
	}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		name := fd.Name.Name
		if fd.Recv != nil && len(fd.Recv.List) == 1 {
			name = receiverType(fd.Recv.List[0].Type) + "." + name
		}
		if name == fn {
			return string(src[fset.Position(fd.Body.Pos()).Offset:fset.Position(fd.Body.End()).Offset]), nil
		}
	}
	return "", os.ErrNotExist
}

// receiverType is the type name of a receiver: T, *T, T[P] and *T[P] give T.
func receiverType(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.StarExpr:
		return receiverType(x.X)
	case *ast.IndexExpr:
		return receiverType(x.X)
	case *ast.IndexListExpr:
		return receiverType(x.X)
	case *ast.Ident:
		return x.Name
	}
	return ""
}

// squash collapses runs of white space, so evidence does not depend on
// gofmt's alignment.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
