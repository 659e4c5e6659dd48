package membrane

// The Gateway API CRDs in crds-gateway/ are the files of the module version
// go.mod pins, unchanged (the conformance suite checks their bundle-version
// annotation); templates/gateway-api-crds.yaml installs one channel of them
// with gatewayAPI.enabled.
//
//go:generate go run ./internal/gatewaycrds

// GatewayAPIVersion is the Gateway API version of crds-gateway/ (go.mod's
// sigs.k8s.io/gateway-api).
const GatewayAPIVersion = "v1.4.1"
