package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Byte sizes: decimal (KB = 1000) and binary (KiB = 1024) units.
const (
	B   ByteSize = 1
	KB  ByteSize = 1000
	MB  ByteSize = 1000 * KB
	GB  ByteSize = 1000 * MB
	TB  ByteSize = 1000 * GB
	KiB ByteSize = 1 << 10
	MiB ByteSize = 1 << 20
	GiB ByteSize = 1 << 30
	TiB ByteSize = 1 << 40
)

var byteUnits = map[string]ByteSize{
	"": B, "B": B,
	"KB": KB, "kB": KB, "MB": MB, "GB": GB, "TB": TB,
	"KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB,
}

// ParseByteSize parses a whole number of bytes with an optional unit:
// "1048576", "512KB", "64MiB", "1 GiB". Units are case-sensitive
// (B, KB, MB, GB, TB decimal; KiB, MiB, GiB, TiB binary).
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '_') {
		i++
	}
	unit, ok := byteUnits[strings.TrimSpace(t[i:])]
	n, err := strconv.ParseInt(strings.ReplaceAll(t[:i], "_", ""), 10, 64)
	if i == 0 || !ok || err != nil {
		return 0, fmt.Errorf("invalid byte size %q (want e.g. 1048576, 512KB, 64MiB)", s)
	}
	if n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("byte size %q is too large", s)
	}
	return ByteSize(n) * unit, nil
}

// String formats b in the largest binary or decimal unit that divides it
// exactly: 64MiB, 500KB, 1234B.
func (b ByteSize) String() string {
	if b != 0 {
		for _, u := range []struct {
			name string
			size ByteSize
		}{{"TiB", TiB}, {"TB", TB}, {"GiB", GiB}, {"GB", GB}, {"MiB", MiB}, {"MB", MB}, {"KiB", KiB}, {"KB", KB}} {
			if b%u.size == 0 {
				return strconv.FormatInt(int64(b/u.size), 10) + u.name
			}
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// MarshalText writes b as String does.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText parses text with ParseByteSize.
func (b *ByteSize) UnmarshalText(text []byte) error {
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// String formats d like time.Duration: "5s", "1m30s".
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration ("10s", "1m30s", "24h").
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf("invalid duration %q", text)
	}
	*d = Duration(v)
	return nil
}
