package main

import (
	"os"
	"path/filepath"
	"strings"
	"time"
)

// machineZone is the IANA name of the zone of the machine running the
// command, and where it was read: the TZ variable, /etc/timezone, or the
// target of the /etc/localtime link. A policy made without --timezone is
// stored in it, so that every server computes the same run times whatever
// its own zone; when the machine's zone has no IANA name that this
// machine's zone database knows ("Local", a copied /etc/localtime, a POSIX
// rule in TZ), the policy gets UTC, which is what an empty zone means.
// root is "/" but in tests.
func machineZone(root string) (zone, from string) {
	if tz, set := os.LookupEnv("TZ"); set {
		name := strings.TrimPrefix(tz, ":")
		if i := strings.Index(name, "zoneinfo/"); i >= 0 {
			name = name[i+len("zoneinfo/"):]
		}
		if tz == "" {
			return "UTC", "the TZ variable, empty"
		}
		if ianaZone(name) {
			return name, "the TZ variable"
		}
		return "UTC", "the TZ variable " + tz + " is no IANA zone name"
	}
	if b, err := os.ReadFile(filepath.Join(root, "etc", "timezone")); err == nil {
		if name := strings.TrimSpace(string(b)); ianaZone(name) {
			return name, "/etc/timezone"
		}
	}
	if target, err := os.Readlink(filepath.Join(root, "etc", "localtime")); err == nil {
		if i := strings.LastIndex(target, "zoneinfo/"); i >= 0 {
			if name := target[i+len("zoneinfo/"):]; ianaZone(name) {
				return name, "/etc/localtime"
			}
		}
	}
	return "UTC", "this machine's zone has no IANA name"
}

// ianaZone reports whether name is a zone the zone database knows by an
// IANA name ("Local" and "" are not names).
func ianaZone(name string) bool {
	if name == "" || name == "Local" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
		return false
	}
	_, err := time.LoadLocation(name)
	return err == nil
}
