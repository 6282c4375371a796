package configfile

import (
	"bytes"
	"math"
	"testing"
	"time"
)

func TestSizes(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "512": 512, "4K": 4 << 10, "64M": 64 << 20, "50G": 50 << 30, "50GB": 50 << 30, "50GiB": 50 << 30,
		"50g": 50 << 30, " 2T ": 2 << 40, "1P": 1 << 50, "8191P": 8191 << 50,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1", "1.5G", "4.5", "12abc", "lots", "8192P", "1E"} {
		if n, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, accepted", bad, n)
		}
	}
	for n, want := range map[int64]string{0: "0", 1000: "1000", 1024: "1K", 50 << 30: "50G", 1536 << 20: "1536M", 18 << 40: "18T", math.MaxInt64: "9223372036854775807"} {
		got := FormatSize(n)
		if got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
		if back, err := ParseSize(got); err != nil || back != n {
			t.Errorf("FormatSize(%d) = %q reads back as %d, %v", n, got, back, err)
		}
	}
}

func TestDurations(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 30 * time.Second: "30s", 5 * time.Minute: "5m", 90 * time.Minute: "1h30m", 168 * time.Hour: "168h",
		time.Hour + time.Second: "1h1s", 300 * time.Millisecond: "300ms", 1500 * time.Millisecond: "1.5s", 7: "7ns", -time.Second: "-1s",
	} {
		got := FormatDuration(d)
		if got != want {
			t.Errorf("FormatDuration(%d) = %q, want %q", d, got, want)
		}
		if back, err := ParseDuration(got); err != nil || back != d {
			t.Errorf("FormatDuration(%d) = %q reads back as %d, %v", d, got, back, err)
		}
	}
	if _, err := ParseDuration("30"); err == nil {
		t.Error("a duration without a unit was accepted")
	}
}

func TestClean(t *testing.T) {
	in := "// head\n{\n  \"a\": \"x // y\", // after\n\t// \"b\": 1,\r\n  \"c\": [1, 2,\n  ],\n  \"d\": \"q\\\",\",\n}\n  // tail"
	want := "       \n{\n  \"a\": \"x // y\", // after\n            \n  \"c\": [1, 2 \n  ],\n  \"d\": \"q\\\",\" \n}\n         "
	got := Clean([]byte(in))
	if string(got) != want {
		t.Errorf("Clean:\n%q\nwant\n%q", got, want)
	}
	// Commas that end no item are the decoder's to refuse.
	for _, s := range []string{"[,]", "{,}", "[1,,]"} {
		if got := Clean([]byte(s)); !bytes.Contains(got, []byte(",")) {
			t.Errorf("Clean(%q) = %q", s, got)
		}
	}
}
