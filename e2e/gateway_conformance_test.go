package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	gwv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gwv1alpha3 "sigs.k8s.io/gateway-api/apis/v1alpha3"
	gwv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
	"sigs.k8s.io/gateway-api/conformance"
	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
	"sigs.k8s.io/yaml"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestGatewayConformance runs the upstream Gateway API conformance suite
// (v1.4.1, profiles GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS, features
// from the GatewayClass's supportedFeatures) against a cluster of its own
// with Gateway API on (the experimental CRDs, for TLSRoute and UDPRoute); every test it
// runs must pass. It writes the suite's ConformanceReport to
// $MEMBRANE_GATEWAY_CONFORMANCE_REPORT, by default to
// gateway-conformance-report.yaml under the local clusters' state root
// (it outlives the cluster), and logs per profile the core and extended
// results and every test skipped, failed or not run, by name with why.
func TestGatewayConformance(t *testing.T) {
	cluster(t) // skips like every end-to-end test
	s := ownCluster(t, localcluster.Options{
		Name: "e2e-gc-" + strconv.Itoa(os.Getpid()), Nodes: 2, PodCIDR: "10.241.0.0/16", ServiceCIDR: "10.91.0.0/16",
		HelmSet: []string{"gatewayAPI.enabled=true", "gatewayAPI.crds=experimental"},
	})
	cfg, err := clientcmd.BuildConfigFromFlags("", s.Layout().Kubeconfig())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, install := range []func(*runtime.Scheme) error{gwv1.Install, gwv1beta1.Install, gwv1alpha2.Install, gwv1alpha3.Install, apiextensionsv1.AddToScheme} {
		if err := install(c.Scheme()); err != nil {
			t.Fatal(err)
		}
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The suite reads the features from the GatewayClass the operator
	// creates and accepts. An operator that started before the
	// experimental CRDs restarts once they are served, and only then lists
	// their route kinds: the suite would skip their tests.
	eventually(t, gatewayTimeout, "GatewayClass membrane accepted, with the experimental route kinds", func() error {
		var gc gwv1.GatewayClass
		if err := c.Get(t.Context(), client.ObjectKey{Name: "membrane"}, &gc); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted") {
			return fmt.Errorf("status %+v", gc.Status)
		}
		for _, kind := range []gwv1.FeatureName{"TLSRoute", "TCPRoute", "UDPRoute"} {
			if !slices.ContainsFunc(gc.Status.SupportedFeatures, func(f gwv1.SupportedFeature) bool { return f.Name == kind }) {
				return fmt.Errorf("supported features %v lack %s", gc.Status.SupportedFeatures, kind)
			}
		}
		return nil
	})
	report := os.Getenv("MEMBRANE_GATEWAY_CONFORMANCE_REPORT")
	if report == "" {
		report = filepath.Join(localcluster.DefaultStateRoot, "gateway-conformance-report.yaml")
	}
	report, err = filepath.Abs(report)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(report) // a report of an earlier run must not pass for this one's
	// GatewayStaticAddresses asks for the top address of the cluster's
	// pool (the assignment hands out the lowest free ones first) and for
	// one in no pool (TEST-NET-3).
	_, poolTop := s.Layout().LoadBalancerPool()
	ipType := gwv1.IPAddressType
	usable := []gwv1beta1.GatewaySpecAddress{{Type: &ipType, Value: poolTop}}
	unusable := []gwv1beta1.GatewaySpecAddress{{Type: &ipType, Value: "203.0.113.10"}}
	var gc gwv1.GatewayClass
	if err := c.Get(t.Context(), client.ObjectKey{Name: "membrane"}, &gc); err != nil {
		t.Fatal(err)
	}
	profiles := sets.New(suite.GatewayHTTPConformanceProfileName, suite.GatewayGRPCConformanceProfileName,
		suite.GatewayTLSConformanceProfileName)
	conformance.RunConformanceWithOptions(t, suite.ConformanceOptions{
		Client:                   c,
		Clientset:                cs,
		RestConfig:               cfg,
		GatewayClassName:         "membrane",
		CleanupBaseResources:     true,
		ConformanceProfiles:      profiles,
		TimeoutConfig:            config.DefaultTimeoutConfig(),
		SkipTests:                []string{},
		ReportOutputPath:         report,
		UsableNetworkAddresses:   usable,
		UnusableNetworkAddresses: unusable,
		Implementation: confv1.Implementation{
			Organization: "membrane-mesh", Project: "membrane", URL: "https://github.com/membrane-mesh/membrane",
			Version: "dev", Contact: []string{"@membrane-mesh/maintainers"},
		},
	})
	summarizeConformance(t, report, gc.Status.SupportedFeatures, profiles)
}

// summarizeConformance reads the report the suite wrote and logs, per
// profile, "core passed/total, extended passed (skipped N, failed N)",
// every skipped and failed test by name, and the tests of the profile the
// suite did not run because the GatewayClass does not claim a feature they
// need. A failed core test fails the test.
func summarizeConformance(t *testing.T, path string, claimed []gwv1.SupportedFeature, profiles sets.Set[suite.ConformanceProfileName]) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the conformance report: %v", err)
	}
	var rep confv1.ConformanceReport
	if err := yaml.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("parse the conformance report %s: %v", path, err)
	}
	t.Logf("conformance report: %s (gateway-api %s)", path, rep.GatewayAPIVersion)
	have := sets.New[features.FeatureName]()
	for _, f := range claimed {
		have.Insert(features.FeatureName(f.Name))
	}
	reports := slices.Clone(rep.ProfileReports)
	slices.SortFunc(reports, func(a, b confv1.ProfileReport) int { return strings.Compare(a.Name, b.Name) })
	seen := sets.New[string]()
	for _, p := range reports {
		seen.Insert(p.Name)
		core := p.Core.Statistics
		var ext confv1.Statistics
		var extSkipped, extFailed []string
		if p.Extended != nil {
			ext, extSkipped, extFailed = p.Extended.Statistics, p.Extended.SkippedTests, p.Extended.FailedTests
		}
		t.Logf("%s: core %d/%d, extended %d (skipped %d, failed %d)", p.Name, core.Passed, core.Passed+core.Failed+core.Skipped,
			ext.Passed, core.Skipped+ext.Skipped, core.Failed+ext.Failed)
		for _, n := range p.Core.SkippedTests {
			t.Logf("  %s core skipped: %s (in the suite's skip list)", p.Name, n)
		}
		for _, n := range extSkipped {
			t.Logf("  %s extended skipped: %s (in the suite's skip list)", p.Name, n)
		}
		for _, n := range p.Core.FailedTests {
			t.Errorf("  %s core FAILED: %s (its subtest TestGatewayConformance/%s says why)", p.Name, n, n)
		}
		for _, n := range extFailed {
			t.Logf("  %s extended FAILED: %s (its subtest TestGatewayConformance/%s says why)", p.Name, n, n)
		}
		if core.Failed > 0 || p.Core.Result == confv1.Failure {
			t.Errorf("%s: %d core tests failed", p.Name, core.Failed)
		}
		prof := profileFeatures(suite.ConformanceProfileName(p.Name))
		for _, ct := range tests.ConformanceTests {
			if !prof.HasAll(ct.Features...) || have.HasAll(ct.Features...) {
				continue
			}
			var missing []string
			for _, f := range ct.Features {
				if !have.Has(f) {
					missing = append(missing, string(f))
				}
			}
			t.Logf("  %s not run: %s (needs %s, not claimed)", p.Name, ct.ShortName, strings.Join(missing, ", "))
		}
	}
	for _, name := range sets.List(profiles) {
		if !seen.Has(string(name)) {
			t.Errorf("the report has no %s profile", name)
		}
	}
	// Tests whose features no one profile has all of run too, but the
	// report counts them nowhere: their subtests say how they went.
	for _, ct := range tests.ConformanceTests {
		if !have.HasAll(ct.Features...) {
			continue
		}
		inProfile := false
		for _, name := range sets.List(profiles) {
			inProfile = inProfile || profileFeatures(name).HasAll(ct.Features...)
		}
		if !inProfile {
			t.Logf("  outside the profiles' statistics: %s (its subtest TestGatewayConformance/%s says how it went)", ct.ShortName, ct.ShortName)
		}
	}
}

// profileFeatures are the core and extended features of a conformance
// profile of v1.4.1 (a test belongs to a profile when the profile has all
// its features).
func profileFeatures(name suite.ConformanceProfileName) sets.Set[features.FeatureName] {
	var p suite.ConformanceProfile
	switch name {
	case suite.GatewayHTTPConformanceProfileName:
		p = suite.GatewayHTTPConformanceProfile
	case suite.GatewayGRPCConformanceProfileName:
		p = suite.GatewayGRPCConformanceProfile
	case suite.GatewayTLSConformanceProfileName:
		p = suite.GatewayTLSConformanceProfile
	default:
		return sets.New[features.FeatureName]()
	}
	return p.CoreFeatures.Union(p.ExtendedFeatures)
}
