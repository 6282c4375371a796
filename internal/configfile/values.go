package configfile

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// sizeUnits are the units of a size, powers of 1024 as a disk's or a
// tape's capacity is usually given to a backup administrator.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{{"P", 1 << 50}, {"T", 1 << 40}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}}

// ParseSize reads a size in bytes: a whole number, optionally with a unit
// K, M, G, T or P (powers of 1024; "G", "GB" and "GiB" are the same), as
// in "512", "64M", "50G".
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if n, ok := cutUnit(t, u.suffix); ok {
			t, mult = n, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a size: use a whole number of bytes with K, M, G or T (e.g. \"512M\", \"50G\")", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is too large a size", s)
	}
	return n * mult, nil
}

func cutUnit(s, unit string) (string, bool) {
	for _, suffix := range []string{unit + "IB", unit + "B", unit} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			return n, true
		}
	}
	return s, false
}

// FormatSize writes n bytes in the largest unit that holds it exactly, as
// ParseSize reads it back: 53687091200 is "50G", 1000 is "1000".
func FormatSize(n int64) string {
	if n == 0 {
		return "0"
	}
	for _, u := range sizeUnits {
		if n%u.mult == 0 {
			return strconv.FormatInt(n/u.mult, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

// ParseDuration reads a duration as Go writes one ("300ms", "30s", "5m",
// "1h30m").
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: use a number with a unit, ms, s, m or h (e.g. \"30s\", \"5m\", \"1h30m\")", s)
	}
	return d, nil
}

// FormatDuration writes d the short way a person would: "5m" rather than
// time.Duration's "5m0s", "168h", "1h30m", "300ms".
func FormatDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d < 0 || d%time.Second != 0 {
		if d > 0 && d < time.Second && d%time.Millisecond == 0 {
			return strconv.FormatInt(int64(d/time.Millisecond), 10) + "ms"
		}
		return d.String()
	}
	var b strings.Builder
	h, m, s := d/time.Hour, d%time.Hour/time.Minute, d%time.Minute/time.Second
	if h > 0 {
		fmt.Fprintf(&b, "%dh", h)
	}
	if m > 0 {
		fmt.Fprintf(&b, "%dm", m)
	}
	if s > 0 {
		fmt.Fprintf(&b, "%ds", s)
	}
	return b.String()
}
