package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/cairnbackup/cairn/schedule"
	"github.com/cairnbackup/cairn/wire"
)

// printRPOSummary ends `cairn status` with the clients that breach their
// RPO, the first thing an administrator looks for in the morning.
func printRPOSummary(w io.Writer, st wire.StatusResp) error {
	if st.RPOTargets == 0 {
		return nil
	}
	if len(st.RPOBreaches) == 0 {
		_, err := fmt.Fprintf(w, "RPO: every one of %d client policies has a good restore point within its target\n", st.RPOTargets)
		return err
	}
	fmt.Fprintf(w, "RPO: %d of %d client policies BREACH their target:\n", len(st.RPOBreaches), st.RPOTargets)
	t := newTable(w, "CLIENT", "POLICY", "LAST GOOD", "AGE", "TARGET")
	for _, b := range st.RPOBreaches {
		last := "none yet"
		if b.Backup != 0 {
			last = fmt.Sprintf("%s (backup %d)", humanTime(b.LastGood), b.Backup)
		}
		t.row(b.Client, b.Policy, last, schedule.FormatAge(b.Age), schedule.FormatAge(b.Target))
	}
	return t.flush()
}

// rpoCell is a client's RPO state in `cairn client list`: each policy with
// a target, ok or BREACH, and the age against the target.
func rpoCell(sts []wire.RPOStatus) string {
	if len(sts) == 0 {
		return "-"
	}
	var parts []string
	for _, s := range sts {
		state := "ok"
		if s.Breach {
			state = "BREACH"
		}
		age := schedule.FormatAge(s.Age)
		if s.Backup == 0 {
			age = "none for " + age
		}
		parts = append(parts, fmt.Sprintf("%s %s (%s of %s)", s.Policy, state, age, schedule.FormatAge(s.Target)))
	}
	return strings.Join(parts, "; ")
}
