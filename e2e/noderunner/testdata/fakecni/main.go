// Command fakecni is a CNI plugin for nodeExec's test: ADD records its
// stdin, the network namespace it sees and its environment in the node's
// /var/lib/membrane and prints a result; any other command fails with a
// CNI error.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	in, _ := io.ReadAll(os.Stdin)
	if os.Getenv("CNI_COMMAND") != "ADD" {
		fmt.Printf(`{"cniVersion":"1.0.0","code":7,"msg":"refused %s"}`+"\n", os.Getenv("CNI_COMMAND"))
		os.Exit(1)
	}
	ns := os.Getenv("CNI_NETNS")
	if _, err := os.Stat(ns); err != nil {
		ns = err.Error()
	}
	seen := string(in) + "\n" + ns + "\n" + strings.Join(os.Environ(), ",")
	if err := os.WriteFile("/var/lib/membrane/seen", []byte(seen), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println(`{"cniVersion":"1.0.0","ips":[{"address":"10.244.1.7/32"}]}`)
}
