package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`); build
// output carries ImportPath instead of Package.
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string
}

// line is one output line of a package, and the test that printed it.
type line struct {
	test string
	text string
}

// pkg is a package whose output is not fully printed yet.
type pkg struct {
	lines  []line            // every output line, in order
	ended  map[string]string // test → pass, fail or skip
	ready  []string          // lines that can be printed once the package is first in line
	done   bool
	failed bool
}

// skip is a skipped test and the reason it gave.
type skip struct {
	name, reason string
}

// reporter turns the events of `go test -json` back into go test's usual
// output and keeps the skipped tests. Packages print one after the other,
// in the order they started, as go test prints them. Without verbose a
// package prints its result line, and when it failed also its own output
// and that of its tests that did not pass or skip; with verbose it prints
// everything as it comes.
type reporter struct {
	w       io.Writer
	verbose bool
	module  string // trimmed from package paths in the skip summary

	pkgs   map[string]*pkg
	order  []string // packages not yet fully printed, by start
	skips  []skip
	failed bool
	// counts are the tests and subtests by result: pass, fail, skip.
	counts map[string]int
}

func newReporter(w io.Writer, verbose bool, module string) *reporter {
	return &reporter{w: w, verbose: verbose, module: module, pkgs: map[string]*pkg{}, counts: map[string]int{}}
}

// read handles every event from r; a line that is not an event is printed
// as it is.
func (r *reporter) read(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Fprintln(r.w, sc.Text())
			continue
		}
		r.handle(e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read go test -json output: %w", err)
	}
	r.finish()
	return nil
}

func (r *reporter) handle(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.w, e.Output)
		return
	case "build-fail":
		r.failed = true
		return
	}
	if e.Package == "" {
		return
	}
	p := r.pkgs[e.Package]
	if p == nil {
		p = &pkg{ended: map[string]string{}}
		r.pkgs[e.Package] = p
		r.order = append(r.order, e.Package)
	}
	switch e.Action {
	case "output":
		p.lines = append(p.lines, line{e.Test, e.Output})
		if r.verbose {
			p.ready = append(p.ready, e.Output)
		}
	case "pass", "fail", "skip":
		if e.Action == "fail" {
			r.failed = true
		}
		if e.Test != "" {
			p.ended[e.Test] = e.Action
			r.counts[e.Action]++
			if e.Action == "skip" {
				r.skips = append(r.skips, skip{r.name(e.Package, e.Test), reason(p.lines, e.Test)})
			}
			break
		}
		p.failed = e.Action == "fail"
		r.end(p)
	}
	r.flush()
}

// end marks p done and, without verbose, picks what of it to print.
func (r *reporter) end(p *pkg) {
	p.done = true
	if r.verbose {
		return
	}
	for _, l := range p.lines {
		switch {
		case !p.failed:
			// A passing package prints only its result line.
			if l.test == "" && (strings.HasPrefix(l.text, "ok  \t") || strings.HasPrefix(l.text, "?   \t")) {
				p.ready = append(p.ready, l.text)
			}
		case framing(l.text):
		case l.test == "" || (p.ended[l.test] != "pass" && p.ended[l.test] != "skip"):
			p.ready = append(p.ready, l.text)
		}
	}
	p.lines = nil
}

// flush prints what is ready, first package first; a package that is done
// hands over to the next.
func (r *reporter) flush() {
	for len(r.order) > 0 {
		name := r.order[0]
		p := r.pkgs[name]
		for _, s := range p.ready {
			fmt.Fprint(r.w, s)
		}
		p.ready = nil
		if !p.done {
			return
		}
		delete(r.pkgs, name)
		r.order = r.order[1:]
	}
}

// finish prints what is left of packages that never ended (their test
// binary died without a result), then go test's closing FAIL and the skip
// summary, and last a count of the tests by result.
func (r *reporter) finish() {
	for _, name := range r.order {
		if p := r.pkgs[name]; !p.done {
			r.failed = true
			p.failed = true
			r.end(p)
		}
	}
	r.flush()
	if r.failed {
		fmt.Fprintln(r.w, "FAIL")
	}
	fmt.Fprintln(r.w, summary(r.skips))
	fmt.Fprintf(r.w, "tests: %d passed, %d failed, %d skipped\n", r.counts["pass"], r.counts["fail"], r.counts["skip"])
}

// name is pkg.Test with the module's path trimmed from pkg.
func (r *reporter) name(pkgPath, test string) string {
	if r.module != "" {
		if rel, ok := strings.CutPrefix(pkgPath, r.module+"/"); ok {
			pkgPath = rel
		}
	}
	return pkgPath + "." + test
}

// framing tells the lines go test -json adds for its own bookkeeping
// (a plain run without -v does not print them).
func framing(s string) bool {
	for _, p := range []string{"=== RUN ", "=== PAUSE ", "=== CONT ", "=== NAME "} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// logLine is a line of t.Log, t.Skip and the like: "    file_test.go:12: msg".
var logLine = regexp.MustCompile(`^\s+[\w.+-]+\.go:\d+: (.*)$`)

// reason is the last message test logged: the one of its t.Skip. The
// continuation lines of a multi-line message join it with spaces.
func reason(lines []line, test string) string {
	var msg []string
	for _, l := range lines {
		if l.test != test {
			continue
		}
		text := strings.TrimRight(l.text, "\n")
		switch {
		case framing(l.text) || strings.HasPrefix(strings.TrimSpace(text), "--- "):
		case logLine.MatchString(text):
			msg = []string{logLine.FindStringSubmatch(text)[1]}
		case msg != nil && strings.TrimSpace(text) != "":
			msg = append(msg, strings.TrimSpace(text))
		}
	}
	if len(msg) == 0 {
		return "no reason given"
	}
	return strings.Join(msg, " ")
}

// summary is one line: the skipped tests by name, grouped by reason, or
// that none was skipped.
func summary(skips []skip) string {
	if len(skips) == 0 {
		return "no tests skipped"
	}
	skips = slices.SortedFunc(slices.Values(skips), func(a, b skip) int { return strings.Compare(a.name, b.name) })
	var reasons []string
	names := map[string][]string{}
	for _, s := range skips {
		if names[s.reason] == nil {
			reasons = append(reasons, s.reason)
		}
		names[s.reason] = append(names[s.reason], s.name)
	}
	groups := make([]string, len(reasons))
	for i, why := range reasons {
		groups[i] = strings.Join(names[why], ", ") + " (" + why + ")"
	}
	noun := "tests"
	if len(skips) == 1 {
		noun = "test"
	}
	return fmt.Sprintf("skipped %d %s: %s", len(skips), noun, strings.Join(groups, "; "))
}
