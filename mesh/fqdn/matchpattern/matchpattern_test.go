package matchpattern

import (
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		match   []string
		noMatch []string
	}{
		{pattern: "*",
			match:   []string{"cilium.io", "a.b.c.example.com.", "EXAMPLE.com", ".", "x", "_srv._tcp.example.com"},
			noMatch: []string{"a b.com", "a..b", "caf\u00e9.com"}},
		{pattern: "**", match: []string{"cilium.io", "."}},
		{pattern: "*.", match: []string{"cilium.io", "."}},
		{pattern: "example.com",
			match:   []string{"example.com", "example.com.", "EXAMPLE.Com", "Example.COM."},
			noMatch: []string{"www.example.com", "example.co", "example.com.org", "xexample.com", "example_com"}},
		{pattern: "*.cilium.io",
			match:   []string{"sub.cilium.io", "sub.cilium.io.", "SUB.Cilium.IO", "a-b_c.cilium.io"},
			noMatch: []string{"cilium.io", "a.sub.cilium.io", "subcilium.io", "sub.cilium.io.evil.com", "sub.cilium.iox"}},
		{pattern: "sub*.cilium.io",
			match:   []string{"sub.cilium.io", "sub1.cilium.io", "subway.cilium.io"},
			noMatch: []string{"su.cilium.io", "a.sub.cilium.io", "xsub.cilium.io"}},
		{pattern: "special*service.api.cilium.io",
			match:   []string{"specialservice.api.cilium.io", "special-123-service.api.cilium.io"},
			noMatch: []string{"special.service.api.cilium.io", "specialservicex.api.cilium.io"}},
		{pattern: "*.*.cilium.io",
			match:   []string{"a.b.cilium.io"},
			noMatch: []string{"a.cilium.io", "a.b.c.cilium.io"}},
		{pattern: "api.*",
			match:   []string{"api.com", "api.io."},
			noMatch: []string{"api.example.com", "api"}},
		{pattern: "*-*.example.com",
			match:   []string{"a-b.example.com", "-.example.com", "x-y-z.example.com"},
			noMatch: []string{"ab.example.com"}},
		{pattern: "**.cilium.io",
			match:   []string{"sub.cilium.io", "a.b.c.cilium.io", "A.B.Cilium.IO."},
			noMatch: []string{"cilium.io", "xcilium.io", "a.cilium.io.org"}},
		{pattern: "***.cilium.io", match: []string{"a.b.cilium.io"}, noMatch: []string{"cilium.io"}},
		{pattern: "**.*.io",
			match:   []string{"a.b.io", "a.b.c.io"},
			noMatch: []string{"b.io"}},
		{pattern: "Example.COM.", match: []string{"example.com"}},
	} {
		m, err := Compile(tc.pattern)
		if err != nil {
			t.Errorf("Compile(%q): %v", tc.pattern, err)
			continue
		}
		for _, n := range tc.match {
			if !m.Match(n) {
				t.Errorf("pattern %q does not match %q, want a match", tc.pattern, n)
			}
		}
		for _, n := range tc.noMatch {
			if m.Match(n) {
				t.Errorf("pattern %q matches %q, want no match", tc.pattern, n)
			}
		}
	}
}

func TestMatchName(t *testing.T) {
	m, err := CompileName("API.Example.com")
	if err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string]bool{
		"api.example.com": true, "api.example.com.": true, "API.EXAMPLE.COM": true,
		"example.com": false, "xapi.example.com": false, "api.example.co": false,
	} {
		if got := m.Match(n); got != want {
			t.Errorf("name %q: Match(%q) = %v, want %v", m, n, got, want)
		}
	}
	if got := m.String(); got != "api.example.com." {
		t.Errorf("String() = %q, want the canonical name", got)
	}
	if (Matcher{}).Match("example.com") {
		t.Error("the zero Matcher matches")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		s       string
		pattern bool
		want    string // substring of the error; "" for valid
	}{
		{s: "example.com"},
		{s: "example.com."},
		{s: "_srv._tcp.example.com"},
		{s: "a-b.c_d.e"},
		{s: "localhost"},
		{s: strings.Repeat("a.", 127) + "a"},
		{s: "", want: "empty name"},
		{s: ".", want: "the root"},
		{s: ".example.com", want: "empty label"},
		{s: "a..b", want: "empty label"},
		{s: "example.com..", want: "empty label"},
		{s: "exa mple.com", want: "invalid character ' ' at offset 3"},
		{s: " example.com", want: "invalid character ' ' at offset 0"},
		{s: "example.com/x", want: "invalid character '/'"},
		{s: "ex@mple.com", want: "invalid character '@'"},
		{s: "*.example.com", want: "'*' at offset 0: a name has no wildcards"},
		{s: "[a].com", want: "invalid character '['"},
		{s: strings.Repeat("a", 256), want: "256 characters long, more than 255"},

		{s: "*", pattern: true},
		{s: "**", pattern: true},
		{s: "*.example.com", pattern: true},
		{s: "**.example.com", pattern: true},
		{s: "***.example.com.", pattern: true},
		{s: "a*b*c.example.com", pattern: true},
		{s: "example.com", pattern: true},
		{s: "", pattern: true, want: "empty pattern"},
		{s: ".", pattern: true, want: "the root"},
		{s: "*..com", pattern: true, want: "empty label"},
		{s: ".*.com", pattern: true, want: "empty label"},
		{s: "a.**.com", pattern: true, want: `"**" is only allowed as the whole first label`},
		{s: "a**.com", pattern: true, want: `"**" is only allowed as the whole first label`},
		{s: "**x.com", pattern: true, want: `"**" is only allowed as the whole first label`},
		{s: "*.com ", pattern: true, want: "invalid character ' ' at offset 5"},
		{s: "*.com,b.com", pattern: true, want: "invalid character ','"},
		{s: "(a|b).com", pattern: true, want: "invalid character '('"},
		{s: "a+.com", pattern: true, want: "invalid character '+'"},
		{s: "*." + strings.Repeat("a", 254), pattern: true, want: "256 characters long"},
	} {
		validate, kind := ValidateName, "name"
		if tc.pattern {
			validate, kind = ValidatePattern, "pattern"
		}
		err := validate(tc.s)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s %q: %v, want valid", kind, tc.s, err)
		case tc.want != "" && err == nil:
			t.Errorf("%s %q: valid, want an error with %q", kind, tc.s, tc.want)
		case tc.want != "" && !strings.Contains(err.Error(), tc.want):
			t.Errorf("%s %q: error %q, want one with %q", kind, tc.s, err, tc.want)
		}
		// Compile refuses exactly what validation refuses.
		compile := CompileName
		if tc.pattern {
			compile = Compile
		}
		if _, cerr := compile(tc.s); (cerr == nil) != (err == nil) {
			t.Errorf("%s %q: compile error %v, validation error %v", kind, tc.s, cerr, err)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	m, err := Compile("*.api.example.com")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if !m.Match("eu-west-1.api.example.com") {
			b.Fatal("no match")
		}
	}
}
