package worldhost

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// TestAuthorization: on one port, gRPC over h2c reaches the authorization
// service, which allows paths under AllowedPrefix (adding AuthzHeader) and
// denies others with 403; plain HTTP/1.1 still gets the host's answer.
func TestAuthorization(t *testing.T) {
	srv := httptest.NewUnstartedServer(withAuthorization("api", HTTPHandler("api")))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	defer srv.Close()

	conn, err := grpc.NewClient(strings.TrimPrefix(srv.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func(path string) *authv3.CheckResponse {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path},
		}}}
		resp, err := authv3.NewAuthorizationClient(conn).Check(t.Context(), req)
		if err != nil {
			t.Fatalf("Check %s: %v", path, err)
		}
		return resp
	}
	ok := check(AllowedPrefix + "/x")
	if ok.GetStatus().GetCode() != int32(codes.OK) || len(ok.GetOkResponse().GetHeaders()) != 1 ||
		ok.GetOkResponse().GetHeaders()[0].GetHeader().GetKey() != AuthzHeader || ok.GetOkResponse().GetHeaders()[0].GetHeader().GetValue() != "api" {
		t.Errorf("allowed path: %v", ok)
	}
	denied := check("/other")
	if denied.GetStatus().GetCode() != int32(codes.PermissionDenied) || denied.GetDeniedResponse().GetStatus().GetCode() != 403 {
		t.Errorf("denied path: %v", denied)
	}

	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.ProtoMajor != 1 || !strings.HasPrefix(string(body), "api ") {
		t.Errorf("HTTP/%d answer %q, want api's over HTTP/1", resp.ProtoMajor, body)
	}
}
