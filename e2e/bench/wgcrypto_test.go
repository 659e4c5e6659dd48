package bench

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/unix"
)

// wgCryptoCost is the CPU cost of WireGuard's cipher alone, in CPU-seconds
// per GB of payload: Go's ChaCha20-Poly1305 (the one wireguard-go uses)
// sealing and then opening packets of the tunnel's MTU (1420 bytes), on
// one locked OS thread, timed by that thread's CPU time (so other work on
// the machine does not inflate it). Each byte crossing the tunnel is
// sealed once and opened once, so this is the crypto part of the floor.
func wgCryptoCost(packet int, total time.Duration) (sealOpen float64, err error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	key := make([]byte, chacha20poly1305.KeySize)
	if _, err := rand.Read(key); err != nil {
		return 0, err
	}
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return 0, err
	}
	plain := make([]byte, packet)
	_, _ = rand.Read(plain)
	sealed := make([]byte, 0, packet+aead.Overhead())
	opened := make([]byte, 0, packet)
	var nonce [chacha20poly1305.NonceSize]byte
	threadCPU := func() time.Duration {
		var ru unix.Rusage
		_ = unix.Getrusage(unix.RUSAGE_THREAD, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := threadCPU()
	var bytes float64
	for n := uint64(0); ; n++ {
		nonce[4], nonce[5], nonce[6], nonce[7] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		sealed = aead.Seal(sealed[:0], nonce[:], plain, nil)
		if opened, err = aead.Open(opened[:0], nonce[:], sealed, nil); err != nil {
			return 0, fmt.Errorf("open packet %d: %w", n, err)
		}
		bytes += float64(packet)
		if n%1024 == 1023 && threadCPU()-start >= total {
			break
		}
	}
	return (threadCPU() - start).Seconds() / (bytes / 1e9), nil
}

func TestWGCryptoCost(t *testing.T) {
	c, err := wgCryptoCost(1420, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// Any real cipher costs something, and none of this century's CPUs
	// need 100 CPU-seconds per GB.
	if c <= 0 || c > 100 {
		t.Fatalf("ChaCha20-Poly1305 seal+open: %.3f CPU-s/GB, want a cost in (0, 100]", c)
	}
	t.Logf("ChaCha20-Poly1305 seal+open, 1420-byte packets: %.3f CPU-s/GB", c)
}
