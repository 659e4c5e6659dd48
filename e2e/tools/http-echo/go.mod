// Wrapper module that builds the pinned hashicorp/http-echo binary.
module github.com/membrane-mesh/membrane/e2e/tools/http-echo

go 1.26

// Keep the runtime defaults of the upstream module's go line.
godebug default=go1.21

require github.com/hashicorp/http-echo v1.0.0 // indirect

tool github.com/hashicorp/http-echo
