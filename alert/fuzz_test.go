package alert

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseRetryAfter: a webhook's Retry-After comes from outside. Whatever
// it holds, the wait read from it is between 0 and a day, and a number of
// seconds reads as that many seconds.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", " 5 ", "0", "-1", "1.5", "Wed, 21 Oct 2015 07:28:00 GMT", "99999999999", "4294967295", "+3", "0x10", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		d := parseRetryAfter(h)
		if d < 0 || d > maxRetryAfter {
			t.Fatalf("parseRetryAfter(%q) = %s", h, d)
		}
		trimmed := strings.TrimSpace(h)
		if n, err := strconv.ParseUint(trimmed, 10, 32); err == nil && len(trimmed) <= 10 {
			if want := min(time.Duration(n)*time.Second, maxRetryAfter); d != want {
				t.Fatalf("parseRetryAfter(%q) = %s, want %s", h, d, want)
			}
		} else if d != 0 {
			t.Fatalf("parseRetryAfter(%q) = %s, want 0 for what is not a number of seconds", h, d)
		}
	})
}
