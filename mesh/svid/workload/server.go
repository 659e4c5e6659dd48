// Package workload serves the SPIFFE Workload API to the pods of a node on a
// unix socket: a caller is known by its process (SO_PEERCRED), the process
// by its cgroup, the cgroup by its pod; it gets the X.509-SVID of its pod's
// service account and the trust bundle, and nothing else.
package workload

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	workloadpb "github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/membrane-mesh/membrane/mesh/svid"
)

// ErrNoIdentity is returned by an Attestor for a process that is no pod's
// on this node (or whose pod has no identity).
var ErrNoIdentity = errors.New("the caller is no pod of this node")

// Attestor names the SPIFFE ID of a process.
type Attestor interface {
	// IdentityOf returns the SPIFFE ID of the pod whose UID is podUID;
	// ErrNoIdentity (wrapped) when there is none on this node.
	IdentityOf(podUID string) (spiffeid.ID, error)
}

// Server implements the SPIFFE Workload API's X.509 calls.
type Server struct {
	workloadpb.UnimplementedSpiffeWorkloadAPIServer
	log      *slog.Logger
	src      svid.Source
	attestor Attestor
	// procRoot is /proc (tests point it elsewhere).
	procRoot string
}

// NewServer returns a server handing out src's SVIDs to the callers
// attestor names.
func NewServer(log *slog.Logger, src svid.Source, attestor Attestor) *Server {
	return &Server{log: log, src: src, attestor: attestor, procRoot: "/proc"}
}

// Serve serves the Workload API on a unix socket at path until ctx ends.
// The socket is open to every local user (0666): callers are told apart by
// their pod, not their uid.
func (s *Server) Serve(ctx context.Context, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("workload API socket directory: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove stale workload API socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("workload API socket: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return fmt.Errorf("workload API socket mode: %w", err)
	}
	gs := grpc.NewServer(grpc.Creds(peerCreds{podUID: s.podUID}))
	workloadpb.RegisterSpiffeWorkloadAPIServer(gs, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		gs.Stop() // streams wait for changes: end them
	}()
	s.log.Info("SPIFFE Workload API serving", "socket", path)
	err = gs.Serve(ln)
	<-done
	os.Remove(path)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("workload API: %w", err)
	}
	return nil
}

// caller attests the peer of a call: the Workload API's security header,
// then pid → cgroup → pod → SPIFFE ID.
func (s *Server) caller(ctx context.Context) (spiffeid.ID, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return spiffeid.ID{}, status.Error(codes.InvalidArgument, "security header missing from request")
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Internal, "no peer")
	}
	info, ok := p.AuthInfo.(peerInfo)
	if !ok {
		return spiffeid.ID{}, status.Error(codes.Internal, "no peer credentials")
	}
	if info.err != nil {
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, info.err.Error())
	}
	id, err := s.attestor.IdentityOf(info.podUID)
	if err != nil {
		return spiffeid.ID{}, status.Error(codes.PermissionDenied, err.Error())
	}
	return id, nil
}

// podUID reads the pod UID from the cgroup of pid.
func (s *Server) podUID(pid int32) (string, error) {
	raw, err := os.ReadFile(filepath.Join(s.procRoot, fmt.Sprint(pid), "cgroup"))
	if err != nil {
		return "", fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	uid, ok := PodUIDFromCgroup(string(raw))
	if !ok {
		return "", fmt.Errorf("pid %d: %w", pid, ErrNoIdentity)
	}
	return uid, nil
}

var podUIDPattern = regexp.MustCompile(`(?:pod|pods/)([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})`)

// PodUIDFromCgroup finds the pod UID in a /proc/<pid>/cgroup file: the
// kubelet's cgroupfs (…/pod<uid>/…) and systemd (…-pod<uid with _>.slice)
// layouts, and pods/<uid> (Membrane's local cluster). The unified (v2)
// hierarchy wins.
func PodUIDFromCgroup(content string) (string, bool) {
	var found string
	for _, line := range strings.Split(content, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		m := podUIDPattern.FindAllStringSubmatch(parts[2], -1)
		if len(m) == 0 {
			continue
		}
		uid := strings.ReplaceAll(m[len(m)-1][1], "_", "-")
		if parts[0] == "0" && parts[1] == "" {
			return uid, true
		}
		if found == "" {
			found = uid
		}
	}
	return found, found != ""
}

// FetchX509SVID streams the caller's SVID and the bundle, again after every
// change of either.
func (s *Server) FetchX509SVID(_ *workloadpb.X509SVIDRequest, stream grpc.ServerStreamingServer[workloadpb.X509SVIDResponse]) error {
	ctx := stream.Context()
	id, err := s.caller(ctx)
	if err != nil {
		s.log.Info("workload API call refused", "error", err)
		return err
	}
	var sent *x509svid.SVID
	var sentBundle []byte
	for {
		changed := s.src.Changed()
		snap := s.src.Snapshot()
		if sv := snap.SVIDs[id]; sv != nil && snap.Bundle != nil {
			bundle := concatDER(snap.Bundle.X509Authorities())
			if sv != sent || string(bundle) != string(sentBundle) {
				resp, err := x509Response(sv, bundle)
				if err != nil {
					return status.Error(codes.Internal, err.Error())
				}
				if err := stream.Send(resp); err != nil {
					return err
				}
				sent, sentBundle = sv, bundle
			}
		} else if sent != nil {
			// The pod's identity went (its last pod of the service account
			// is gone): so does the stream.
			return status.Error(codes.PermissionDenied, "no identity issued")
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func x509Response(sv *x509svid.SVID, bundle []byte) (*workloadpb.X509SVIDResponse, error) {
	key, err := x509.MarshalPKCS8PrivateKey(sv.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("marshal svid key: %w", err)
	}
	return &workloadpb.X509SVIDResponse{Svids: []*workloadpb.X509SVID{{
		SpiffeId:    sv.ID.String(),
		X509Svid:    concatDER(sv.Certificates),
		X509SvidKey: key,
		Bundle:      bundle,
	}}}, nil
}

// FetchX509Bundles streams the trust bundle to an attested caller.
func (s *Server) FetchX509Bundles(_ *workloadpb.X509BundlesRequest, stream grpc.ServerStreamingServer[workloadpb.X509BundlesResponse]) error {
	ctx := stream.Context()
	if _, err := s.caller(ctx); err != nil {
		return err
	}
	var sent []byte
	for {
		changed := s.src.Changed()
		snap := s.src.Snapshot()
		if snap.Bundle != nil && !snap.Bundle.Empty() {
			b := concatDER(snap.Bundle.X509Authorities())
			if string(b) != string(sent) {
				if err := stream.Send(&workloadpb.X509BundlesResponse{Bundles: map[string][]byte{snap.Bundle.TrustDomain().IDString(): b}}); err != nil {
					return err
				}
				sent = b
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func concatDER(certs []*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, c.Raw...)
	}
	return out
}

// peerCreds are transport credentials that attest the process that opened
// the connection, once: its pod UID, read from its cgroup. The process is
// held by a pidfd (SO_PEERPIDFD) while its cgroup is read, and must still
// be alive after: a PID the kernel reused for another process is never
// attested in the opener's place.
type peerCreds struct {
	podUID func(pid int32) (string, error)
}

// peerInfo is the attested connection: the pod UID, or why there is none.
type peerInfo struct {
	pid    int32
	podUID string
	err    error
}

func (peerInfo) AuthType() string { return "peercred" }

func (peerCreds) ClientHandshake(_ context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, nil, errors.New("server-only credentials")
}

func (p peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	var credErr, pidfdErr error
	pidfd := -1
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		pidfd, pidfdErr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	}); err != nil {
		return nil, nil, err
	}
	if credErr != nil {
		return nil, nil, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	info := peerInfo{pid: cred.Pid}
	if cred.Pid <= 0 {
		info.err = fmt.Errorf("the caller's process is not visible to the agent: %w", ErrNoIdentity)
		return c, info, nil
	}
	if pidfdErr == nil {
		defer unix.Close(pidfd)
	}
	info.podUID, info.err = p.podUID(cred.Pid)
	// Kernels before 6.5 have no SO_PEERPIDFD: the PID is all there is.
	if info.err == nil && pidfdErr == nil {
		if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
			info.podUID, info.err = "", fmt.Errorf("pid %d exited while attested: %w", cred.Pid, ErrNoIdentity)
		}
	}
	return c, info, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }
