package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMachineZone: the zone a policy made without --timezone gets, from
// each place a machine says its zone, and UTC when none names it.
func TestMachineZone(t *testing.T) {
	etc := func(t *testing.T, timezone, localtime string) string {
		root := t.TempDir()
		if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if timezone != "" {
			if err := os.WriteFile(filepath.Join(root, "etc", "timezone"), []byte(timezone), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if localtime != "" {
			if err := os.Symlink(localtime, filepath.Join(root, "etc", "localtime")); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	for _, tc := range []struct {
		name, tz             string // tz "-": unset
		timezone, localtime  string
		wantZone, wantSource string
	}{
		{"TZ", "Europe/Berlin", "America/New_York\n", "", "Europe/Berlin", "the TZ variable"},
		{"TZ a file", ":/usr/share/zoneinfo/Asia/Tokyo", "", "", "Asia/Tokyo", "the TZ variable"},
		{"TZ empty", "", "America/New_York\n", "", "UTC", "the TZ variable, empty"},
		{"TZ a POSIX rule", "XYZ-3", "", "", "UTC", "the TZ variable XYZ-3 is no IANA zone name"},
		{"/etc/timezone", "-", "America/New_York\n", "/usr/share/zoneinfo/Europe/Paris", "America/New_York", "/etc/timezone"},
		{"/etc/localtime", "-", "", "../usr/share/zoneinfo/Australia/Sydney", "Australia/Sydney", "/etc/localtime"},
		{"/etc/timezone not a zone", "-", "Local\n", "/usr/share/zoneinfo/Europe/Paris", "Europe/Paris", "/etc/localtime"},
		{"nothing", "-", "", "", "UTC", "this machine's zone has no IANA name"},
		{"a copied localtime", "-", "", "/etc/localtime.copy", "UTC", "this machine's zone has no IANA name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("TZ", tc.tz)
			if tc.tz == "-" {
				os.Unsetenv("TZ") // t.Setenv puts it back
			}
			zone, from := machineZone(etc(t, tc.timezone, tc.localtime))
			if zone != tc.wantZone || from != tc.wantSource {
				t.Fatalf("zone %q from %q, want %q from %q", zone, from, tc.wantZone, tc.wantSource)
			}
		})
	}
}
