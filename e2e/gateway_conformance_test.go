package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"

	"github.com/membrane-mesh/membrane/e2e/localcluster"
)

// TestGatewayConformance runs the upstream Gateway API conformance suite
// (v1.4.1, profiles GATEWAY-HTTP, GATEWAY-GRPC and GATEWAY-TLS, features
// from the GatewayClass's supportedFeatures) against a cluster of its own
// with Gateway API on (the experimental CRDs, for TLSRoute); every test it
// runs must pass. Set
// MEMBRANE_GATEWAY_CONFORMANCE_REPORT to a file to keep the report.
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
	// creates and accepts.
	eventually(t, gatewayTimeout, "GatewayClass membrane accepted", func() error {
		var gc gwv1.GatewayClass
		if err := c.Get(t.Context(), client.ObjectKey{Name: "membrane"}, &gc); err != nil {
			return err
		}
		if !meta.IsStatusConditionTrue(gc.Status.Conditions, "Accepted") || len(gc.Status.SupportedFeatures) == 0 {
			return fmt.Errorf("status %+v", gc.Status)
		}
		return nil
	})
	report := os.Getenv("MEMBRANE_GATEWAY_CONFORMANCE_REPORT")
	if report != "" {
		report, _ = filepath.Abs(report)
	}
	conformance.RunConformanceWithOptions(t, suite.ConformanceOptions{
		Client:               c,
		Clientset:            cs,
		RestConfig:           cfg,
		GatewayClassName:     "membrane",
		CleanupBaseResources: true,
		ConformanceProfiles: sets.New(suite.GatewayHTTPConformanceProfileName, suite.GatewayGRPCConformanceProfileName,
			suite.GatewayTLSConformanceProfileName),
		TimeoutConfig:    config.DefaultTimeoutConfig(),
		SkipTests:        []string{},
		ReportOutputPath: report,
		Implementation: confv1.Implementation{
			Organization: "membrane-mesh", Project: "membrane", URL: "https://github.com/membrane-mesh/membrane",
			Version: "dev", Contact: []string{"@membrane-mesh/maintainers"},
		},
	})
}
