package plugin

import (
	"errors"
	"fmt"

	cnins "github.com/containernetworking/cni/pkg/ns"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/membrane-mesh/membrane/mesh/cni/ipam"
)

// cniError wraps err into a CNI error with code and a message that starts
// with what the plugin was doing. An error that already is a *types.Error
// keeps its code.
func cniError(code uint, doing string, err error) error {
	var e *types.Error
	if errors.As(err, &e) {
		return types.NewError(e.Code, doing+": "+e.Msg, e.Details)
	}
	return types.NewError(code, fmt.Sprintf("%s: %v", doing, err), "")
}

// allocError maps an IPAM failure: an exhausted range is "try again later"
// (pods on the node may go away), anything else is an I/O failure.
func allocError(err error) error {
	var ex *ipam.ExhaustedError
	if errors.As(err, &ex) {
		return types.NewError(types.ErrTryAgainLater, ex.Error(), "")
	}
	return cniError(types.ErrIOFailure, "allocate IP", err)
}

// openNetNS opens the pod's network namespace, refusing the plugin's own.
func openNetNS(path string) (ns.NetNS, error) {
	if path == "" {
		return nil, types.NewError(types.ErrInvalidNetNS, "CNI_NETNS is empty", "")
	}
	n, err := ns.GetNS(path)
	if err != nil {
		var notExist ns.NSPathNotExistErr
		if errors.As(err, &notExist) {
			return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("netns %q does not exist", path), "")
		}
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open netns %q: %v", path, err), "")
	}
	if same, cerr := cnins.CheckNetNS(path); cerr != nil {
		_ = n.Close()
		return nil, cerr
	} else if same {
		_ = n.Close()
		return nil, types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("netns %q is the plugin's own network namespace", path), "")
	}
	return n, nil
}
