package svid

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/membrane-mesh/membrane/encryption/spiffe"
)

// CAClient asks the built-in CA's signing endpoint for SVIDs, as the node
// agent: it presents the agent's pod-bound service-account token and
// accepts only a server whose certificate is spiffe.CAServerID, verified with
// the trust bundle.
type CAClient struct {
	td        spiffeid.TrustDomain
	endpoints func() ([]string, error)
	tokenFile string
	http      *http.Client
}

// NewCAClient returns a client. endpoints lists the signing endpoint's
// host:port addresses; tokenFile holds the agent's token (re-read for every
// request: the kubelet renews it); bundle verifies the server.
func NewCAClient(td spiffeid.TrustDomain, endpoints func() ([]string, error), tokenFile string, bundle x509bundle.Source) *CAClient {
	tlsCfg := tlsconfig.TLSClientConfig(bundle, tlsconfig.AuthorizeID(spiffe.CAServerID(td)))
	return &CAClient{
		td: td, endpoints: endpoints, tokenFile: tokenFile,
		http: &http.Client{
			Timeout:   15 * time.Second,
			Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
		},
	}
}

// Sign implements Signer, trying the endpoints in turn.
func (c *CAClient) Sign(ctx context.Context, csr []byte) ([]*x509.Certificate, *x509bundle.Bundle, error) {
	token, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return nil, nil, fmt.Errorf("agent token: %w", err)
	}
	addrs, err := c.endpoints()
	if err != nil {
		return nil, nil, fmt.Errorf("CA endpoints: %w", err)
	}
	if len(addrs) == 0 {
		return nil, nil, errors.New("CA endpoints: none ready")
	}
	body, err := json.Marshal(spiffe.SignRequest{CSR: csr})
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, addr := range addrs {
		chain, bundle, err := c.signAt(ctx, addr, strings.TrimSpace(string(token)), body)
		if err == nil {
			return chain, bundle, nil
		}
		errs = append(errs, err)
		var refused refusedError
		if errors.As(err, &refused) {
			break // another replica answers the same
		}
	}
	return nil, nil, errors.Join(errs...)
}

// refusedError is a CA's refusal (HTTP 4xx).
type refusedError struct {
	status int
	msg    string
}

func (e refusedError) Error() string { return fmt.Sprintf("refused (%d): %s", e.status, e.msg) }

func (c *CAClient) signAt(ctx context.Context, addr, token string, body []byte) ([]*x509.Certificate, *x509bundle.Bundle, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+spiffe.SignPath, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("CA %s: %w", addr, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("CA %s: read answer: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(raw))
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return nil, nil, fmt.Errorf("CA %s: %w", addr, refusedError{resp.StatusCode, msg})
		}
		return nil, nil, fmt.Errorf("CA %s: status %d: %s", addr, resp.StatusCode, msg)
	}
	var sr spiffe.SignResponse
	if err := json.Unmarshal(raw, &sr); err != nil {
		return nil, nil, fmt.Errorf("CA %s: answer: %w", addr, err)
	}
	chain, bundle, err := spiffe.ParseSignResponse(c.td, sr)
	if err != nil {
		return nil, nil, fmt.Errorf("CA %s: %w", addr, err)
	}
	return chain, bundle, nil
}
