package kubeletapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/tools/remotecommand"
	remotecommandserver "k8s.io/kubelet/pkg/cri/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

// The kubelet's streaming defaults.
const (
	streamIdleTimeout     = 4 * time.Hour
	streamCreationTimeout = remotecommandconsts.DefaultStreamCreationTimeout
)

// exec serves /exec/...: the SPDY (channel.k8s.io v1 to v4) and WebSocket
// (channel.k8s.io, v4) remote command protocols, as the kubelet's CRI
// streaming server does. The API server translates kubectl's v5 WebSocket
// to SPDY before it gets here.
func (h *handler) exec(w http.ResponseWriter, r *http.Request) {
	ns, pod, container := r.PathValue("namespace"), r.PathValue("pod"), r.PathValue("container")
	opts, err := remotecommandserver.NewOptions(r)
	if err != nil {
		writeError(w, err, http.StatusBadRequest)
		return
	}
	cmd := r.URL.Query()[corev1.ExecCommandParam]
	if len(cmd) == 0 {
		writeError(w, errors.New("no command"), http.StatusBadRequest)
		return
	}
	h.logger.Debug("exec", "namespace", ns, "pod", pod, "container", container, "command", cmd, "tty", opts.TTY)
	ex := &executor{handler: h, namespace: ns}
	remotecommandserver.ServeExec(w, r, ex, pod, types.UID(r.PathValue("uid")), container, cmd, opts,
		streamIdleTimeout, streamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}

// executor adapts Pods.Exec to the kubelet's streaming library.
type executor struct {
	*handler
	namespace string
}

// ExecInContainer implements remotecommandserver.Executor. A non-zero exit
// status becomes a utilexec.ExitError, which ServeExec sends to the client
// as the command's exit code.
func (e *executor) ExecInContainer(ctx context.Context, pod string, _ types.UID, container string, cmd []string,
	in io.Reader, out, errOut io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	// Nil stream interfaces stay nil in Pods.Exec's types.
	var stdin io.Reader
	var stdout, stderr io.Writer
	if in != nil {
		stdin = in
	}
	if out != nil {
		stdout = out
	}
	if errOut != nil && !tty { // a terminal carries both outputs
		stderr = errOut
	}
	code, err := e.pods.Exec(ctx, e.namespace, pod, container, cmd, stdin, stdout, stderr, tty)
	if err != nil {
		e.logger.Warn("exec failed", "namespace", e.namespace, "pod", pod, "container", container, "err", err)
		return err
	}
	if code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command terminated with exit code %d", code), Code: code}
	}
	return nil
}
