// Wrapper module that builds the Gateway API conformance echo-basic server.
// It is a package of the main sigs.k8s.io/gateway-api module (its own
// go.mod is shipped as .go.mod, so it is not a nested module).
module github.com/membrane-mesh/membrane/e2e/tools/echo-basic

go 1.26

// Keep the runtime defaults of the upstream module's go line.
godebug default=go1.21

require (
	golang.org/x/net v0.43.0 // indirect
	golang.org/x/sys v0.35.0 // indirect
	golang.org/x/text v0.28.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20250826171959-ef028d996bc1 // indirect
	google.golang.org/grpc v1.75.1 // indirect
	google.golang.org/protobuf v1.36.8 // indirect
	sigs.k8s.io/gateway-api v1.4.1 // indirect
)

tool sigs.k8s.io/gateway-api/conformance/echo-basic
