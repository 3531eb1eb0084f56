package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
)

// ErrBlocked marks a request the client refused to send: a scheme other
// than http and https, or a connection to an address the source may not
// reach (the SSRF guard). Retrying will not help.
var ErrBlocked = errors.New("blocked")

// BlockedError names what was refused and why. It unwraps to ErrBlocked.
type BlockedError struct {
	// Target is the refused address (an IP, a host name as written, or a
	// URL without its query string).
	Target string
	// Reason says which rule refused it: "loopback", "private",
	// "cloud metadata", "scheme \"file\" is not http or https", ...
	Reason string
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("refused to connect to %s: %s", e.Target, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Unwrap() error { return ErrBlocked }

// addrClass is how the guard treats an address.
type addrClass int

const (
	classPublic addrClass = iota
	// classPrivate: loopback, private, unique-local, CGNAT, reserved ranges;
	// reachable with allow_private.
	classPrivate
	// classSensitive: link-local and cloud metadata; reachable only when
	// listed in Options.AllowHosts.
	classSensitive
)

// metadataAddrs are cloud instance-metadata and platform endpoints: they
// hand out credentials, so even allow_private does not reach them.
var metadataAddrs = map[netip.Addr]string{
	netip.MustParseAddr("169.254.169.254"): "cloud metadata (AWS, GCP, Azure, OCI, DigitalOcean)",
	netip.MustParseAddr("169.254.170.2"):   "cloud metadata (AWS ECS task)",
	netip.MustParseAddr("169.254.169.253"): "cloud metadata (AWS DNS)",
	netip.MustParseAddr("169.254.169.123"): "cloud metadata (AWS time)",
	netip.MustParseAddr("fd00:ec2::254"):   "cloud metadata (AWS IMDS IPv6)",
	netip.MustParseAddr("fd00:ec2::253"):   "cloud metadata (AWS DNS IPv6)",
	netip.MustParseAddr("fd00:ec2::23"):    "cloud metadata (AWS ECS IPv6)",
	netip.MustParseAddr("100.100.100.200"): "cloud metadata (Alibaba Cloud)",
	netip.MustParseAddr("192.0.0.192"):     "cloud metadata (Oracle Cloud)",
	netip.MustParseAddr("168.63.129.16"):   "cloud platform endpoint (Azure WireServer)",
}

type prefixRule struct {
	p      netip.Prefix
	class  addrClass
	reason string
}

// v4Rules and v6Rules classify addresses after the IPv4 embedded in an IPv6
// address (mapped, NAT64, 6to4, compatible) has been checked on its own.
var v4Rules = []prefixRule{
	{netip.MustParsePrefix("169.254.0.0/16"), classSensitive, "link-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), classSensitive, "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), classSensitive, "reserved (240.0.0.0/4, broadcast)"},
	{netip.MustParsePrefix("0.0.0.0/8"), classPrivate, "unspecified (0.0.0.0/8)"},
	{netip.MustParsePrefix("127.0.0.0/8"), classPrivate, "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), classPrivate, "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), classPrivate, "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), classPrivate, "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), classPrivate, "carrier-grade NAT (100.64.0.0/10)"},
	{netip.MustParsePrefix("192.0.0.0/24"), classPrivate, "IETF protocol assignments (192.0.0.0/24)"},
	{netip.MustParsePrefix("192.0.2.0/24"), classPrivate, "documentation (TEST-NET-1)"},
	{netip.MustParsePrefix("198.51.100.0/24"), classPrivate, "documentation (TEST-NET-2)"},
	{netip.MustParsePrefix("203.0.113.0/24"), classPrivate, "documentation (TEST-NET-3)"},
	{netip.MustParsePrefix("198.18.0.0/15"), classPrivate, "benchmarking (198.18.0.0/15)"},
}

var v6Rules = []prefixRule{
	{netip.MustParsePrefix("fe80::/10"), classSensitive, "link-local"},
	{netip.MustParsePrefix("ff00::/8"), classSensitive, "multicast"},
	{netip.MustParsePrefix("::1/128"), classPrivate, "loopback"},
	{netip.MustParsePrefix("::/128"), classPrivate, "unspecified"},
	{netip.MustParsePrefix("fc00::/7"), classPrivate, "unique-local (fc00::/7)"},
	{netip.MustParsePrefix("fec0::/10"), classPrivate, "site-local (fec0::/10)"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), classPrivate, "local-use NAT64 (64:ff9b:1::/48)"},
	{netip.MustParsePrefix("2001::/32"), classPrivate, "Teredo (2001::/32)"},
	{netip.MustParsePrefix("2001:db8::/32"), classPrivate, "documentation (2001:db8::/32)"},
	{netip.MustParsePrefix("100::/64"), classPrivate, "discard-only (100::/64)"},
	{netip.MustParsePrefix("::/96"), classPrivate, "IPv4-compatible (::/96)"},
}

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
)

// classify says how the guard treats ip and why.
func classify(ip netip.Addr) (addrClass, string) {
	ip = ip.WithZone("")
	if why, ok := metadataAddrs[ip]; ok {
		return classSensitive, why
	}
	if ip.Is4In6() {
		c, why := classify(ip.Unmap())
		return c, "IPv4-mapped " + why
	}
	if ip.Is6() {
		b := ip.As16()
		var embedded netip.Addr
		var form string
		switch {
		case nat64Prefix.Contains(ip):
			embedded, form = netip.AddrFrom4([4]byte(b[12:16])), "NAT64 "
		case sixToFour.Contains(ip):
			embedded, form = netip.AddrFrom4([4]byte(b[2:6])), "6to4 "
		}
		if embedded.IsValid() {
			if c, why := classify(embedded); c != classPublic {
				return c, form + why
			}
			return classPublic, ""
		}
	}
	rules := v6Rules
	if ip.Is4() {
		rules = v4Rules
	}
	for _, r := range rules {
		if r.p.Contains(ip) {
			return r.class, r.reason
		}
	}
	return classPublic, ""
}

// guard decides which addresses a source's connections may reach.
type guard struct {
	allowPrivate bool
	allowNames   map[string]bool // lower-case host names exempt from the sensitive rules
	allowPrefix  []netip.Prefix  // addresses exempt from every rule
}

func newGuard(allowPrivate bool, allowHosts []string) (*guard, error) {
	g := &guard{allowPrivate: allowPrivate, allowNames: map[string]bool{}}
	for _, h := range allowHosts {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
			continue
		case strings.Contains(h, "/"):
			p, err := netip.ParsePrefix(h)
			if err != nil {
				return nil, fmt.Errorf("allow_hosts: %q: %w", h, err)
			}
			g.allowPrefix = append(g.allowPrefix, p.Masked())
		default:
			if ip, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
				g.allowPrefix = append(g.allowPrefix, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			g.allowNames[strings.ToLower(strings.TrimSuffix(h, "."))] = true
		}
	}
	return g, nil
}

// check returns a *BlockedError when ip may not be reached; named says the
// host name dialled is listed in allow_hosts.
func (g *guard) check(ip netip.Addr, named bool) error {
	for _, p := range g.allowPrefix {
		if p.Contains(ip.Unmap()) {
			return nil
		}
	}
	class, why := classify(ip)
	switch {
	case class == classPublic:
		return nil
	case class == classPrivate && g.allowPrivate:
		return nil
	case named:
		return nil // listed in allow_hosts by name: the operator's explicit choice
	case class == classPrivate:
		return &BlockedError{Target: ip.String(), Reason: why + " address (set allow_private: true to allow)"}
	default:
		return &BlockedError{Target: ip.String(), Reason: why + " address (list it in allow_hosts to allow)"}
	}
}

// dialContext resolves and connects like net.Dialer, but refuses
// non-canonical numeric host names outright and checks every address at
// connect time (net.Dialer.Control), after DNS: a name whose answer
// changes between requests is checked again on each connection.
func (g *guard) dialContext(base *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if _, err := netip.ParseAddr(host); err != nil {
			if ip, ok := legacyIPv4(host); ok {
				return nil, &BlockedError{Target: host, Reason: fmt.Sprintf("non-canonical IPv4 literal (means %s)", ip)}
			}
		}
		named := g.allowNames[strings.ToLower(strings.TrimSuffix(host, "."))]
		d := *base
		d.Control = func(network, address string, _ syscall.RawConn) error {
			switch network {
			case "tcp", "tcp4", "tcp6":
			default:
				return &BlockedError{Target: address, Reason: "network " + network + " is not TCP"}
			}
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &BlockedError{Target: address, Reason: "unparseable address"}
			}
			return g.check(ap.Addr(), named)
		}
		return d.DialContext(ctx, network, addr)
	}
}

// legacyIPv4 parses the inet_aton forms some resolvers accept as IPv4
// literals: 127.1, 2130706433, 0x7f000001, 0177.0.0.1. A host name made
// only of such parts is never a real DNS name, so it is refused rather
// than handed to a resolver that may or may not read it as an address.
func legacyIPv4(host string) (netip.Addr, bool) {
	parts := strings.Split(host, ".")
	if len(parts) == 0 || len(parts) > 4 {
		return netip.Addr{}, false
	}
	vals := make([]uint64, len(parts))
	for i, p := range parts {
		if p == "" {
			return netip.Addr{}, false
		}
		v, err := strconv.ParseUint(p, 0, 32) // base prefix: 0x hex, 0 octal
		if err != nil {
			return netip.Addr{}, false
		}
		vals[i] = v
	}
	var n uint64
	last := len(vals) - 1
	for i := range last {
		if vals[i] > 255 {
			return netip.Addr{}, false
		}
		n |= vals[i] << (24 - 8*uint(i))
	}
	if vals[last] >= 1<<(8*uint(4-last)) {
		return netip.Addr{}, false
	}
	n |= vals[last]
	return netip.AddrFrom4([4]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), true
}
