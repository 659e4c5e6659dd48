package worldhost

import (
	"context"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// AllowedPrefix is the path prefix of the requests the world host's
// authorization service allows; AuthzHeader is the header it adds to
// them (its value the host's name).
const (
	AllowedPrefix = "/allowed"
	AuthzHeader   = "x-world-authz"
)

// authorization is the Envoy external authorization service
// (envoy.service.auth.v3.Authorization) of a world host: it allows the
// requests whose path starts with AllowedPrefix, adding AuthzHeader with
// the host's name, and denies the others with 403 and a body naming it.
type authorization struct {
	authv3.UnimplementedAuthorizationServer
	name string
}

func (a authorization) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if strings.HasPrefix(req.GetAttributes().GetRequest().GetHttp().GetPath(), AllowedPrefix) {
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: AuthzHeader, Value: a.name}}},
			}},
		}, nil
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Body:   "denied by " + a.name + "\n",
		}},
	}, nil
}

// withAuthorization serves gRPC requests (HTTP/2 with content type
// application/grpc: the authorization service) and hands the others to h.
func withAuthorization(name string, h http.Handler) http.Handler {
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, authorization{name: name})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			g.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
