package agentauth

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Where the API server publishes the CA of its client certificates.
const (
	AuthenticationConfigMapNamespace = "kube-system"
	AuthenticationConfigMap          = "extension-apiserver-authentication"
	ClientCAKey                      = "client-ca-file"
)

// LoadClientCA reads a PEM bundle of CA certificates.
func LoadClientCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("client CA %s: no PEM certificate in it", path)
	}
	return pool, nil
}

// ClusterClientCA reads the client CA the API server publishes (ConfigMap
// kube-system/extension-apiserver-authentication, key client-ca-file). It
// returns nil, nil when the cluster publishes none: only bearer tokens
// authenticate then.
func ClusterClientCA(ctx context.Context, c kubernetes.Interface) (*x509.CertPool, error) {
	cm, err := c.CoreV1().ConfigMaps(AuthenticationConfigMapNamespace).Get(ctx, AuthenticationConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the cluster's client CA (configmap %s/%s): %w", AuthenticationConfigMapNamespace, AuthenticationConfigMap, err)
	}
	pem, ok := cm.Data[ClientCAKey]
	if !ok || pem == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(pem)) {
		return nil, fmt.Errorf("configmap %s/%s key %s: no PEM certificate in it", AuthenticationConfigMapNamespace, AuthenticationConfigMap, ClientCAKey)
	}
	return pool, nil
}
