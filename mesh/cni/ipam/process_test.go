package ipam

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// Environment of the helper process started by TestConcurrentProcessesGetDistinctIPs.
const (
	helperDirEnv   = "MEMBRANE_IPAM_HELPER_DIR"
	helperIndexEnv = "MEMBRANE_IPAM_HELPER_INDEX"
	perProcess     = 10
)

// TestHelperProcess allocates perProcess addresses and prints them, one per
// line. It does nothing unless started by TestConcurrentProcessesGetDistinctIPs.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		return
	}
	a, err := New(dir, netip.MustParsePrefix("10.0.0.0/26"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for i := range perProcess {
		o := Owner{ContainerID: "proc-" + os.Getenv(helperIndexEnv) + "-" + strconv.Itoa(i), IfName: "eth0"}
		ip, err := a.Allocate(context.Background(), o)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Println(ip)
	}
	os.Exit(0)
}

func TestConcurrentProcessesGetDistinctIPs(t *testing.T) {
	dir := t.TempDir()
	const procs = 5
	cmds := make([]*exec.Cmd, procs)
	outs := make([]*bytes.Buffer, procs)
	for i := range procs {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
		cmd.Env = append(os.Environ(), helperDirEnv+"="+dir, helperIndexEnv+"="+strconv.Itoa(i))
		outs[i] = &bytes.Buffer{}
		cmd.Stdout = outs[i]
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start helper %d: %v", i, err)
		}
		cmds[i] = cmd
	}
	seen := map[string]int{}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper %d: %v", i, err)
		}
		sc := bufio.NewScanner(outs[i])
		for sc.Scan() {
			ip := sc.Text()
			if j, dup := seen[ip]; dup {
				t.Errorf("processes %d and %d both got %s", j, i, ip)
			}
			seen[ip] = i
		}
	}
	if len(seen) != procs*perProcess {
		t.Errorf("got %d distinct IPs, want %d", len(seen), procs*perProcess)
	}
	all, err := newTestAllocator(t, dir, "10.0.0.0/26").List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(all) != procs*perProcess {
		t.Errorf("%d allocation files on disk, want %d", len(all), procs*perProcess)
	}
}
