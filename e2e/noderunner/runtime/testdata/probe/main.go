// Command probe runs inside the runtime's test containers and reports what it
// sees, one key=value per line.
package main

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: probe info|sleep|ignore-term|big|stderr|cat|exit|tty ...")
		os.Exit(2)
	}
	switch arg := os.Args[1:]; arg[0] {
	case "info": // info <file to read> <exit code>
		info(arg[1])
		code, _ := strconv.Atoi(arg[2])
		os.Exit(code)
	case "sleep": // exits 0 on SIGTERM
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Println("ready")
		<-sig
		fmt.Println("term")
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		for {
			time.Sleep(time.Hour)
		}
	case "big": // a 40000-byte line, then an unterminated one
		fmt.Println(strings.Repeat("x", 40000))
		fmt.Print("tail")
	case "stderr":
		fmt.Fprintln(os.Stderr, "boom")
		os.Exit(3)
	case "cat":
		_, _ = io.Copy(os.Stdout, os.Stdin)
	case "exit":
		code, _ := strconv.Atoi(arg[1])
		os.Exit(code)
	case "privs": // capabilities, /sys and /dev as the container sees them
		status, _ := os.ReadFile("/proc/self/status")
		for _, line := range strings.Split(string(status), "\n") {
			for _, k := range []string{"CapEff", "CapPrm", "CapBnd", "CapInh"} {
				if v, ok := strings.CutPrefix(line, k+":"); ok {
					fmt.Printf("%s=%s\n", strings.ToLower(k), strings.TrimSpace(v))
				}
			}
		}
		var st unix.Statfs_t
		sys := "rw"
		if err := unix.Statfs("/sys", &st); err != nil || st.Flags&unix.ST_RDONLY != 0 {
			sys = "ro"
		}
		devs, _ := os.ReadDir("/dev")
		fmt.Printf("sys=%s\ndevs=%d\n", sys, len(devs))
	case "watch": // watch <file>: prints seen once it exists (30 s at most)
		fmt.Println("ready")
		for i := 0; i < 300; i++ {
			if _, err := os.Stat(arg[1]); err == nil {
				fmt.Println("seen")
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		fmt.Println("not seen")
	case "tty":
		_, err := unix.IoctlGetTermios(0, unix.TCGETS)
		ws, _ := unix.IoctlGetWinsize(1, unix.TIOCGWINSZ)
		fmt.Printf("tty=%t\nsize=%dx%d\n", err == nil, ws.Col, ws.Row)
	}
}

func info(file string) {
	host, _ := os.Hostname()
	wd, _ := os.Getwd()
	content, err := os.ReadFile(file)
	if err != nil {
		content = []byte("error: " + err.Error())
	}
	netns, _ := os.Readlink("/proc/self/ns/net")
	cgroups, _ := os.ReadFile("/proc/self/cgroup")
	var cgroup string
	for _, line := range strings.Split(string(cgroups), "\n") {
		if strings.HasPrefix(line, "0::") {
			cgroup = line
		}
	}
	roWrite := "ok"
	if err := os.WriteFile(file, []byte("overwritten"), 0o644); err != nil {
		roWrite = "denied"
	}
	written := "ok"
	if err := os.WriteFile("/probe-wrote", []byte("x"), 0o644); err != nil {
		written = err.Error()
	}
	_, devErr := os.Stat("/dev/null")
	fmt.Printf("pid=%d\nhostname=%s\ncwd=%s\nfoo=%s\nfile=%s\nnetns=%s\ncgroup=%s\nrowrite=%s\nwritten=%s\ndevnull=%t\n",
		os.Getpid(), host, wd, os.Getenv("FOO"), strings.TrimSpace(string(content)), netns,
		cgroup, roWrite, written, devErr == nil)
}
