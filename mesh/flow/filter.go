package flow

import (
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/membrane-mesh/membrane/mesh/labels"
)

// Filter keys: the observe API's query parameters and `membrane observe`'s
// flag names.
const (
	KeyNamespace    = "namespace"
	KeyPod          = "pod"
	KeyFromPod      = "from-pod"
	KeyToPod        = "to-pod"
	KeyFromLabel    = "from-label"
	KeyToLabel      = "to-label"
	KeyFromIdentity = "from-identity"
	KeyToIdentity   = "to-identity"
	KeyVerdict      = "verdict"
	KeyType         = "type"
	KeyProtocol     = "protocol"
	KeyPort         = "port"
	KeyHTTPStatus   = "http-status"
	KeyHTTPMethod   = "http-method"
	KeyHTTPPath     = "http-path"
	KeySince        = "since"
)

// FilterKeys are the keys Filter.Set takes (KeySince is set as Filter.Since).
var FilterKeys = []string{
	KeyNamespace, KeyPod, KeyFromPod, KeyToPod, KeyFromLabel, KeyToLabel,
	KeyFromIdentity, KeyToIdentity, KeyVerdict, KeyType, KeyProtocol, KeyPort,
	KeyHTTPStatus, KeyHTTPMethod, KeyHTTPPath,
}

// Protocols a filter takes: the L4 ones, http (L7 flows with HTTP) and dns
// (L7 flows with DNS).
var filterProtocols = []string{"tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "http", "dns"}

// Filter selects flows with `hubble observe`'s semantics: several values of
// one key match if any does (OR); different keys must all match (AND); an
// empty filter matches every flow. "Either side" keys (namespace, pod,
// port) match the source or the destination. The HTTP keys match only L7
// flows with HTTP.
type Filter struct {
	Namespace    []string      // either side's namespace
	Pod          []PodSelector // either side
	FromPod      []PodSelector
	ToPod        []PodSelector
	FromLabel    []LabelSelector
	ToLabel      []LabelSelector
	FromIdentity []uint32
	ToIdentity   []uint32
	Verdict      []Verdict
	Type         []Type
	Protocol     []string // tcp, udp, sctp, icmp (v4 or v6), icmpv4, icmpv6, http, dns
	Port         []uint16 // either side's L4 port
	// HTTPStatus are status codes ("404") or code prefixes, Hubble's
	// classes ("5+": 5xx, "50+": 50x).
	HTTPStatus []string
	HTTPMethod []string         // case-insensitive
	HTTPPath   []*regexp.Regexp // RE2, unanchored
	// Since drops flows older than it (zero: none).
	Since time.Time
}

// Set parses values of the filter key (a FilterKeys name) and adds them.
// Errors name the bad value; callers prefix the flag or parameter.
func (f *Filter) Set(key string, values ...string) error {
	for _, v := range values {
		if err := f.set(key, v); err != nil {
			return err
		}
	}
	return nil
}

func (f *Filter) set(key, v string) error {
	switch key {
	case KeyNamespace:
		if v == "" || strings.Contains(v, "/") {
			return fmt.Errorf("%q: not a namespace", v)
		}
		f.Namespace = append(f.Namespace, v)
	case KeyPod, KeyFromPod, KeyToPod:
		s, err := ParsePodSelector(v)
		if err != nil {
			return err
		}
		switch key {
		case KeyPod:
			f.Pod = append(f.Pod, s)
		case KeyFromPod:
			f.FromPod = append(f.FromPod, s)
		default:
			f.ToPod = append(f.ToPod, s)
		}
	case KeyFromLabel, KeyToLabel:
		s, err := ParseLabelSelector(v)
		if err != nil {
			return err
		}
		if key == KeyFromLabel {
			f.FromLabel = append(f.FromLabel, s)
		} else {
			f.ToLabel = append(f.ToLabel, s)
		}
	case KeyFromIdentity, KeyToIdentity:
		id, err := parseIdentity(v)
		if err != nil {
			return err
		}
		if key == KeyFromIdentity {
			f.FromIdentity = append(f.FromIdentity, id)
		} else {
			f.ToIdentity = append(f.ToIdentity, id)
		}
	case KeyVerdict:
		i := slices.IndexFunc(Verdicts, func(x Verdict) bool { return strings.EqualFold(string(x), v) })
		if i < 0 {
			return fmt.Errorf("%q: want one of %s", v, join(Verdicts))
		}
		f.Verdict = append(f.Verdict, Verdicts[i])
	case KeyType:
		i := slices.IndexFunc(Types, func(x Type) bool { return strings.EqualFold(string(x), v) })
		if i < 0 {
			return fmt.Errorf("%q: want one of %s", v, join(Types))
		}
		f.Type = append(f.Type, Types[i])
	case KeyProtocol:
		p := strings.ToLower(v)
		if !slices.Contains(filterProtocols, p) {
			return fmt.Errorf("%q: want one of %s", v, strings.Join(filterProtocols, ", "))
		}
		f.Protocol = append(f.Protocol, p)
	case KeyPort:
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%q: not a port (1-65535)", v)
		}
		f.Port = append(f.Port, uint16(n))
	case KeyHTTPStatus:
		if !validHTTPStatus(v) {
			return fmt.Errorf("%q: want a code like 404 or a class like 5+", v)
		}
		f.HTTPStatus = append(f.HTTPStatus, v)
	case KeyHTTPMethod:
		if v == "" || strings.ContainsAny(v, " \t/") {
			return fmt.Errorf("%q: not an HTTP method (e.g. GET)", v)
		}
		f.HTTPMethod = append(f.HTTPMethod, v)
	case KeyHTTPPath:
		re, err := regexp.Compile(v)
		if err != nil {
			return fmt.Errorf("%q: not a regular expression (RE2): %w", v, err)
		}
		f.HTTPPath = append(f.HTTPPath, re)
	default:
		return fmt.Errorf("unknown filter %q", key)
	}
	return nil
}

func join[T ~string](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// validHTTPStatus checks Hubble's status syntax: a code of 100-599, or
// its first one or two digits and "+".
func validHTTPStatus(v string) bool {
	digits, class := strings.CutSuffix(v, "+")
	length := len(digits) == 3
	if class {
		length = len(digits) == 1 || len(digits) == 2
	}
	return length && digits[0] >= '1' && digits[0] <= '5' && strings.Trim(digits, "0123456789") == ""
}

// parseIdentity takes a number or a reserved entity's name (world,
// reserved:world, host, remote-node, ...).
func parseIdentity(v string) (uint32, error) {
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return uint32(n), nil
	}
	if id, ok := reservedIdentity(v); ok {
		return id, nil
	}
	return 0, fmt.Errorf("%q: not a security identity (a number, or a reserved one: host, world, remote-node, ...)", v)
}

// Values encodes the filter as the observe API's query parameters.
func (f Filter) Values() url.Values {
	q := url.Values{}
	add := func(key string, vs ...string) {
		for _, v := range vs {
			q.Add(key, v)
		}
	}
	add(KeyNamespace, f.Namespace...)
	for key, sels := range map[string][]PodSelector{KeyPod: f.Pod, KeyFromPod: f.FromPod, KeyToPod: f.ToPod} {
		for _, s := range sels {
			add(key, s.String())
		}
	}
	for key, sels := range map[string][]LabelSelector{KeyFromLabel: f.FromLabel, KeyToLabel: f.ToLabel} {
		for _, s := range sels {
			add(key, s.String())
		}
	}
	for key, ids := range map[string][]uint32{KeyFromIdentity: f.FromIdentity, KeyToIdentity: f.ToIdentity} {
		for _, id := range ids {
			add(key, strconv.FormatUint(uint64(id), 10))
		}
	}
	for _, v := range f.Verdict {
		add(KeyVerdict, string(v))
	}
	for _, t := range f.Type {
		add(KeyType, string(t))
	}
	add(KeyProtocol, f.Protocol...)
	for _, p := range f.Port {
		add(KeyPort, strconv.Itoa(int(p)))
	}
	add(KeyHTTPStatus, f.HTTPStatus...)
	add(KeyHTTPMethod, f.HTTPMethod...)
	for _, re := range f.HTTPPath {
		add(KeyHTTPPath, re.String())
	}
	if !f.Since.IsZero() {
		add(KeySince, f.Since.UTC().Format(time.RFC3339Nano))
	}
	return q
}

// Match reports whether fl passes the filter. It is pure and cheap enough
// to run on the store's writer (FollowOptions.Match).
func (f Filter) Match(fl *Flow) bool {
	src, dst := &fl.Source, &fl.Destination
	return (f.Since.IsZero() || !fl.Time.Before(f.Since)) &&
		anyOf(f.Namespace, func(ns string) bool { return src.Namespace == ns || dst.Namespace == ns }) &&
		anyOf(f.Pod, func(s PodSelector) bool { return s.Match(src) || s.Match(dst) }) &&
		anyOf(f.FromPod, func(s PodSelector) bool { return s.Match(src) }) &&
		anyOf(f.ToPod, func(s PodSelector) bool { return s.Match(dst) }) &&
		anyOf(f.FromLabel, func(s LabelSelector) bool { return s.Match(src.Labels) }) &&
		anyOf(f.ToLabel, func(s LabelSelector) bool { return s.Match(dst.Labels) }) &&
		anyOf(f.FromIdentity, func(id uint32) bool { return src.Identity == id }) &&
		anyOf(f.ToIdentity, func(id uint32) bool { return dst.Identity == id }) &&
		anyOf(f.Verdict, func(v Verdict) bool { return fl.Verdict == v }) &&
		anyOf(f.Type, func(t Type) bool { return fl.Type == t }) &&
		anyOf(f.Protocol, func(p string) bool { return matchProtocol(p, fl) }) &&
		anyOf(f.Port, func(p uint16) bool { return fl.L4.SourcePort == p || fl.L4.DestinationPort == p }) &&
		f.matchHTTP(fl)
}

// matchHTTP applies the HTTP keys: with any of them set, only L7 flows
// with HTTP pass.
func (f Filter) matchHTTP(fl *Flow) bool {
	if len(f.HTTPStatus) == 0 && len(f.HTTPMethod) == 0 && len(f.HTTPPath) == 0 {
		return true
	}
	if fl.L7 == nil || fl.L7.HTTP == nil {
		return false
	}
	h := fl.L7.HTTP
	return anyOf(f.HTTPStatus, func(s string) bool { return matchHTTPStatus(s, h.Code) }) &&
		anyOf(f.HTTPMethod, func(m string) bool { return strings.EqualFold(m, h.Method) }) &&
		anyOf(f.HTTPPath, func(re *regexp.Regexp) bool { return re.MatchString(h.Path) })
}

// matchHTTPStatus matches a code against "404" or a class like "5+"; a
// flow without a code (a request) matches neither.
func matchHTTPStatus(s string, code int) bool {
	if code == 0 {
		return false
	}
	c := strconv.Itoa(code)
	if prefix, class := strings.CutSuffix(s, "+"); class {
		return strings.HasPrefix(c, prefix)
	}
	return c == s
}

// anyOf is true when no values are given (the key does not filter) or one
// of them matches.
func anyOf[T any](values []T, match func(T) bool) bool {
	return len(values) == 0 || slices.ContainsFunc(values, match)
}

func matchProtocol(p string, fl *Flow) bool {
	switch p {
	case "http":
		return fl.L7 != nil && fl.L7.HTTP != nil
	case "dns":
		return fl.L7 != nil && fl.L7.DNS != nil
	case "icmp":
		return fl.L4.Protocol == ICMPv4 || fl.L4.Protocol == ICMPv6
	}
	return strings.EqualFold(p, string(fl.L4.Protocol))
}

// PodSelector matches pods by namespace and name prefix.
type PodSelector struct {
	Namespace string // "": any namespace
	Prefix    string // "": any pod of the namespace
}

// ParsePodSelector parses "namespace/name-prefix", "name-prefix" (any
// namespace) or "namespace/" (every pod of the namespace).
func ParsePodSelector(v string) (PodSelector, error) {
	ns, name, found := strings.Cut(v, "/")
	if !found {
		ns, name = "", v
	}
	if v == "" || strings.Contains(name, "/") || (found && ns == "" && name == "") {
		return PodSelector{}, fmt.Errorf("%q: want [namespace/]pod-name-prefix", v)
	}
	return PodSelector{Namespace: ns, Prefix: name}, nil
}

func (s PodSelector) String() string {
	if s.Namespace == "" {
		return s.Prefix
	}
	return s.Namespace + "/" + s.Prefix
}

// Match reports whether ep is a pod the selector selects.
func (s PodSelector) Match(ep *Endpoint) bool {
	return ep.PodName != "" && (s.Namespace == "" || s.Namespace == ep.Namespace) && strings.HasPrefix(ep.PodName, s.Prefix)
}

// LabelSelector is a comma-separated list of requirements that must all
// hold: "key=value" (or "=="), "key!=value", "key" (present), "!key"
// (absent). A key may carry a source, "k8s:app=web"; without one (or
// with "any:") it matches labels of every source.
type LabelSelector []LabelRequirement

// LabelRequirement is one term of a LabelSelector.
type LabelRequirement struct {
	Source string // "" or "any": every source
	Key    string
	Op     LabelOp
	Value  string
}

// LabelOp is a label requirement's operator.
type LabelOp string

// Label operators.
const (
	LabelEquals    LabelOp = "="
	LabelNotEquals LabelOp = "!="
	LabelExists    LabelOp = ""
	LabelNotExists LabelOp = "!"
)

// ParseLabelSelector parses a LabelSelector.
func ParseLabelSelector(v string) (LabelSelector, error) {
	bad := func() (LabelSelector, error) {
		return nil, fmt.Errorf("%q: want key=value (e.g. app=web or k8s:app=web; key!=value, key, !key; comma-separated terms all hold)", v)
	}
	var sel LabelSelector
	for term := range strings.SplitSeq(v, ",") {
		term = strings.TrimSpace(term)
		var r LabelRequirement
		var key string
		switch {
		case strings.Contains(term, "!="):
			r.Op = LabelNotEquals
			key, r.Value, _ = strings.Cut(term, "!=")
		case strings.Contains(term, "=="):
			r.Op = LabelEquals
			key, r.Value, _ = strings.Cut(term, "==")
		case strings.Contains(term, "="):
			r.Op = LabelEquals
			key, r.Value, _ = strings.Cut(term, "=")
		case strings.HasPrefix(term, "!"):
			r.Op = LabelNotExists
			key = term[1:]
		default:
			r.Op = LabelExists
			key = term
		}
		r.Source, r.Key = splitSource(strings.TrimSpace(key))
		r.Value = strings.TrimSpace(r.Value)
		if r.Key == "" || strings.ContainsAny(r.Key, " =!,") || strings.ContainsAny(r.Value, " =!,") {
			return bad()
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// splitSource splits "k8s:app" into "k8s", "app"; a key without a source
// has the source "".
func splitSource(key string) (source, name string) {
	if s, n, ok := strings.Cut(key, ":"); ok {
		return s, n
	}
	return "", key
}

func (s LabelSelector) String() string {
	terms := make([]string, len(s))
	for i, r := range s {
		key := r.Key
		if r.Source != "" {
			key = r.Source + ":" + key
		}
		switch r.Op {
		case LabelEquals, LabelNotEquals:
			terms[i] = key + string(r.Op) + r.Value
		case LabelNotExists:
			terms[i] = "!" + key
		default:
			terms[i] = key
		}
	}
	return strings.Join(terms, ",")
}

// Match reports whether labels ("source:key=value" or "source:key", as
// Endpoint.Labels) satisfy every requirement.
func (s LabelSelector) Match(ls []string) bool {
	for _, r := range s {
		if !r.requirement().Matches(labels.FromList(ls)) {
			return false
		}
	}
	return true
}

// requirement is r in mesh/labels' terms.
func (r LabelRequirement) requirement() labels.Requirement {
	key := r.Key
	if r.Source != "" {
		key = r.Source + ":" + key
	}
	switch r.Op {
	case LabelEquals:
		return labels.NewRequirement(key, labels.In, r.Value)
	case LabelNotEquals:
		return labels.NewRequirement(key, labels.NotIn, r.Value)
	case LabelNotExists:
		return labels.NewRequirement(key, labels.DoesNotExist)
	}
	return labels.NewRequirement(key, labels.Exists)
}

// Request is an observe API request: which flows, and whether to follow.
type Request struct {
	Filter Filter
	// Last limits the answer (or, following, the backlog) to the last N
	// matching flows. Not following, 0 means every matching flow the store
	// holds; following, 0 means no backlog unless Filter.Since is set.
	Last   int
	Follow bool
}

// Request parameters besides the filter keys.
const (
	KeyLast   = "last"
	KeyFollow = "follow"
)

// Values encodes the request as the observe API's query parameters.
func (r Request) Values() url.Values {
	q := r.Filter.Values()
	if r.Last > 0 {
		q.Set(KeyLast, strconv.Itoa(r.Last))
	}
	if r.Follow {
		q.Set(KeyFollow, "true")
	}
	return q
}

// ParseRequest decodes the observe API's query parameters; now resolves a
// relative since (a duration). Unknown parameters are errors: an agent
// must not silently ignore a filter it does not know.
func ParseRequest(q url.Values, now time.Time) (Request, error) {
	var r Request
	for _, key := range slices.Sorted(maps.Keys(q)) {
		vs := q[key]
		if len(vs) == 0 {
			continue
		}
		var err error
		switch key {
		case KeyLast:
			r.Last, err = strconv.Atoi(last(vs))
			if err != nil || r.Last < 0 {
				err = fmt.Errorf("%q: not a count", last(vs))
			}
		case KeyFollow:
			r.Follow, err = strconv.ParseBool(last(vs))
			if err != nil {
				err = fmt.Errorf("%q: not a boolean", last(vs))
			}
		case KeySince:
			r.Filter.Since, err = ParseSince(last(vs), now)
		default:
			err = r.Filter.Set(key, vs...)
			if err != nil && !slices.Contains(FilterKeys, key) {
				return Request{}, fmt.Errorf("unknown parameter %q", key)
			}
		}
		if err != nil {
			return Request{}, fmt.Errorf("parameter %s: %w", key, err)
		}
	}
	return r, nil
}

func last(vs []string) string { return vs[len(vs)-1] }

// ParseSince parses a point in time: RFC 3339 (e.g.
// 2025-11-21T16:40:00Z), or a duration before now (e.g. 5m, 1h30m).
func ParseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q: want a duration (e.g. 5m) or an RFC 3339 time (e.g. 2025-11-21T16:40:00Z)", v)
	}
	return now.Add(-d), nil
}
