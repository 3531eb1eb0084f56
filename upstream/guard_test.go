package upstream

import (
	"net/netip"
	"testing"
)

// TestGuardAddressForms checks every address form against both settings of
// allow_private.
func TestGuardAddressForms(t *testing.T) {
	t.Parallel()
	const (
		ok        = iota // reachable either way
		private          // reachable only with allow_private
		sensitive        // never reachable without allow_hosts
	)
	tests := []struct {
		addr string
		want int
	}{
		{"8.8.8.8", ok},
		{"93.184.216.34", ok},
		{"2606:4700::1111", ok},
		{"::ffff:8.8.8.8", ok},
		{"64:ff9b::808:808", ok}, // NAT64 of 8.8.8.8
		{"2002:808:808::1", ok},  // 6to4 of 8.8.8.8
		{"127.0.0.1", private},
		{"127.255.0.9", private},
		{"0.0.0.0", private},
		{"10.0.0.1", private},
		{"172.16.5.4", private},
		{"172.31.255.255", private},
		{"192.168.1.1", private},
		{"100.64.0.1", private},
		{"100.127.255.254", private},
		{"198.18.0.1", private},
		{"::1", private},
		{"::", private},
		{"fc00::1", private},
		{"fd12:3456::1", private},
		{"::ffff:127.0.0.1", private},
		{"::ffff:10.1.2.3", private},
		{"::127.0.0.1", private}, // IPv4-compatible
		{"64:ff9b::7f00:1", private},
		{"64:ff9b::a00:1", private},
		{"64:ff9b:1::1", private},
		{"2002:7f00:1::", private},
		{"2002:c0a8:101::1", private},
		{"169.254.169.254", sensitive},
		{"169.254.170.2", sensitive},
		{"169.254.1.1", sensitive},
		{"100.100.100.200", sensitive},
		{"168.63.129.16", sensitive},
		{"192.0.0.192", sensitive},
		{"fd00:ec2::254", sensitive},
		{"fe80::1", sensitive},
		{"fe80::1%eth0", sensitive},
		{"::ffff:169.254.169.254", sensitive},
		{"64:ff9b::a9fe:a9fe", sensitive}, // NAT64 of 169.254.169.254
		{"2002:a9fe:a9fe::", sensitive},   // 6to4 of 169.254.169.254
		{"::ffff:100.100.100.200", sensitive},
		{"224.0.0.1", sensitive},
		{"255.255.255.255", sensitive},
		{"ff02::1", sensitive},
	}
	strict, _ := newGuard(false, nil)
	lenient, _ := newGuard(true, nil)
	listed, _ := newGuard(true, []string{"169.254.169.254", "fd00:ec2::/32"})
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			t.Parallel()
			ip := netip.MustParseAddr(tt.addr)
			errStrict, errLenient := strict.check(ip, false), lenient.check(ip, false)
			if (errStrict == nil) != (tt.want == ok) {
				t.Errorf("allow_private false: err = %v, want blocked %v", errStrict, tt.want != ok)
			}
			if (errLenient == nil) != (tt.want != sensitive) {
				t.Errorf("allow_private true: err = %v, want blocked %v", errLenient, tt.want == sensitive)
			}
			if tt.want == sensitive && strict.check(ip, true) != nil {
				t.Errorf("a host name listed in allow_hosts must reach %s", ip)
			}
		})
	}
	for _, a := range []string{"169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"} {
		if err := listed.check(netip.MustParseAddr(a), false); err != nil {
			t.Errorf("%s is listed in allow_hosts: %v", a, err)
		}
	}
	if err := listed.check(netip.MustParseAddr("169.254.169.253"), false); err == nil {
		t.Error("169.254.169.253 is not listed but was allowed")
	}
	if _, err := newGuard(false, []string{"10.0.0.0/33"}); err == nil {
		t.Error("a bad allow_hosts prefix was accepted")
	}
}

func TestLegacyIPv4(t *testing.T) {
	t.Parallel()
	tests := []struct {
		host string
		want string // "" = not an IPv4 literal
	}{
		{"127.1", "127.0.0.1"},
		{"2130706433", "127.0.0.1"},
		{"0x7f000001", "127.0.0.1"},
		{"0177.0.0.1", "127.0.0.1"},
		{"0x7f.1", "127.0.0.1"},
		{"10.1.65535", "10.1.255.255"},
		{"169.254.43518", "169.254.169.254"},
		{"4294967296", ""},
		{"256.1", ""},
		{"example.com", ""},
		{"1.example", ""},
		{"a.b.c.d", ""},
		{"1..1", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			t.Parallel()
			ip, ok := legacyIPv4(tt.host)
			got := ""
			if ok {
				got = ip.String()
			}
			if got != tt.want {
				t.Errorf("legacyIPv4(%q) = %q, want %q", tt.host, got, tt.want)
			}
		})
	}
}
