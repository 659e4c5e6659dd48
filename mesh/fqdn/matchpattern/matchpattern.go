// Package matchpattern validates and matches the DNS names and name
// patterns of FQDN selectors (toFQDNs and DNS rules), with Cilium's syntax
// and semantics:
//
//   - Names compare case-insensitively, and a trailing dot is optional:
//     "API.example.com" and "api.example.com." are the same name.
//   - A name (matchName) is labels of letters, digits, '-' and '_' separated
//     by single dots, 255 characters at most.
//   - A pattern (matchPattern) may also hold '*', which matches any run of
//     those characters (also none) within one label: "*.example.com"
//     matches "api.example.com" but neither "example.com" nor
//     "a.b.example.com"; "api-*.example.com" matches "api-v1.example.com".
//   - A pattern of stars only ("*") matches every name, and the root ".".
//   - A leading "**." matches one or more whole labels: "**.example.com"
//     matches "a.example.com" and "a.b.example.com", not "example.com".
//     "**" anywhere else is refused (Cilium reads it as "*").
package matchpattern

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// MaxLength is the longest name or pattern accepted, as in Cilium.
const MaxLength = 255

// dnsChars is the regexp class of the characters a label may hold.
const dnsChars = `[-a-z0-9_]`

// Matcher matches DNS names against one name or pattern. The zero Matcher
// matches nothing.
type Matcher struct {
	source string // canonical: lower case, with the trailing dot
	exact  bool   // source is a name, compared as it is
	re     *regexp.Regexp
}

// Compile validates pattern and returns its matcher.
func Compile(pattern string) (Matcher, error) {
	if err := ValidatePattern(pattern); err != nil {
		return Matcher{}, err
	}
	p := strings.ToLower(strings.TrimSuffix(pattern, "."))
	if strings.Trim(p, "*") == "" {
		return Matcher{source: "*", re: regexp.MustCompile(`^(?:(?:` + dnsChars + `+\.)+|\.)$`)}, nil
	}
	var b strings.Builder
	b.WriteString("^")
	rest := p
	if first, after, _ := strings.Cut(p, "."); len(first) >= 2 && strings.Trim(first, "*") == "" {
		b.WriteString(`(?:` + dnsChars + `+\.)+`) // "**.": one or more labels
		rest = after
	}
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; c {
		case '*':
			b.WriteString(dnsChars + `*`)
		case '.':
			b.WriteString(`\.`)
		default:
			b.WriteByte(c) // letters, digits, '-' and '_' are literal
		}
	}
	b.WriteString(`\.$`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return Matcher{}, fmt.Errorf("compile pattern %q: %w", pattern, err)
	}
	return Matcher{source: p + ".", re: re}, nil
}

// CompileName validates name and returns the matcher of exactly that name.
func CompileName(name string) (Matcher, error) {
	if err := ValidateName(name); err != nil {
		return Matcher{}, err
	}
	return Matcher{source: Canonical(name), exact: true}, nil
}

// Match reports whether name (with or without its trailing dot, in any
// case) matches.
func (m Matcher) Match(name string) bool {
	switch {
	case m.exact:
		return Canonical(name) == m.source
	case m.re == nil:
		return false
	}
	return m.re.MatchString(Canonical(name))
}

// String returns the canonical name or pattern: lower case, with the
// trailing dot ("*" for a pattern of stars only).
func (m Matcher) String() string { return m.source }

// Canonical returns name in lower case with a trailing dot, the form the
// matchers compare and the name cache stores.
func Canonical(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// ValidateName reports what makes name unusable as a matchName, or nil.
func ValidateName(name string) error {
	return validate(name, false)
}

// ValidatePattern reports what makes pattern unusable as a matchPattern,
// or nil.
func ValidatePattern(pattern string) error {
	return validate(pattern, true)
}

func validate(s string, pattern bool) error {
	what := "name"
	if pattern {
		what = "pattern"
	}
	switch {
	case s == "":
		return fmt.Errorf("empty %s", what)
	case len(s) > MaxLength:
		return fmt.Errorf("%s is %d characters long, more than %d", what, len(s), MaxLength)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isDNSChar(c) && c != '.' && !(pattern && c == '*') {
			allowed := "letters, digits, '-', '_' and '.'"
			if pattern {
				allowed = "letters, digits, '-', '_', '.' and '*'"
			} else if c == '*' {
				return fmt.Errorf("'*' at offset %d: a name has no wildcards (use matchPattern)", i)
			}
			return fmt.Errorf("invalid character %q at offset %d: only %s are allowed", c, i, allowed)
		}
	}
	if s == "." {
		return fmt.Errorf("the root %q is not a %s", s, what)
	}
	labels := strings.Split(strings.TrimSuffix(s, "."), ".")
	for i, l := range labels {
		if l == "" {
			return errors.New("empty label: a name has no leading dot and no \"..\"")
		}
		if !pattern || !strings.Contains(l, "**") {
			continue
		}
		if strings.Trim(l, "*") != "" || (i > 0 && len(labels) > 1) {
			return fmt.Errorf("%q in label %q: \"**\" is only allowed as the whole first label (\"**.example.com\")", "**", l)
		}
	}
	return nil
}

func isDNSChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}
