package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

func TestPrintableEscapesWhatATerminalWouldObey(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/etc/hosts", "/etc/hosts"},
		{"/home/b/Grüße €.txt", "/home/b/Grüße €.txt"},
		{"with space", "with space"},
		{"evil\x1b[2J\x1b]0;owned\x07", `evil\x1b[2J\x1b]0;owned\a`},
		{"forged\nline", `forged\nline`},
		{"tab\there\rcr", `tab\there\rcr`},
		{"latin1-\xe9t\xe9", `latin1-\xe9t\xe9`},
		{"back\\slash", `back\\slash`},
		{"txt.exe\u202egnp", `txt.exe\u202egnp`},
		{"del\x7f", `del\x7f`},
		{"real-\ufffd", "real-\ufffd"},
	} {
		if got := printable(c.in); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// Two names that differ only in bytes a terminal hides must print
// differently, and no name may print as another.
func TestPrintableIsUnambiguous(t *testing.T) {
	names := []string{"a\\x41", "aA", "a\x41", "a\\\\x41", "a\xff", "a\\xff", "a\n", "a\\n"}
	seen := map[string]string{}
	for _, n := range names {
		p := printable(n)
		if other, ok := seen[p]; ok && other != n {
			t.Errorf("%q and %q both print as %q", n, other, p)
		}
		seen[p] = n
	}
}

func TestTableCellsAreEscaped(t *testing.T) {
	var out bytes.Buffer
	tb := newTable(&out, "PATH")
	tb.row("x\x1b[31mred\ny")
	if err := tb.flush(); err != nil {
		t.Fatal(err)
	}
	if strings.ContainsAny(out.String()[len("PATH\n"):len(out.String())-1], "\x1b\n") {
		t.Fatalf("a control character reached the terminal: %q", out.String())
	}
}

// An error may quote a name from a client's disk; it reaches the terminal
// escaped, its own line breaks kept.
func TestPrintErrorEscapesNames(t *testing.T) {
	var out bytes.Buffer
	printError(&out, "cairn restore", errors.New("2 entries were not restored:\n  /srv/\x1b]0;pwned\x07x: damaged"))
	if strings.Contains(out.String(), "\x1b") || !strings.Contains(out.String(), "restored:\n  /srv/\\x1b]0;pwned\\ax: damaged") {
		t.Fatalf("printed %q", out.String())
	}
}

// TestClusterStatusShowsWhoIsNotAFullMember: a non-voter catching up, an
// unreachable member, a server waiting to be joined and one of another
// group each say so.
func TestClusterStatusShowsWhoIsNotAFullMember(t *testing.T) {
	var b strings.Builder
	err := printClusterStatus(&b, wire.ClusterStatusResp{
		Leader: "s1", Answered: "s2", Group: "g1",
		Members: []wire.MemberStatus{
			{Name: "s1", RaftAddr: "10.0.0.1:7010", Voter: true, Reachable: true, State: "Leader"},
			{Name: "s2", RaftAddr: "10.0.0.2:7010", Voter: true, Error: "no answer"},
			{Name: "s4", RaftAddr: "10.0.0.4:7010", Reachable: true, State: "Follower"},
		},
		Waiting:     []wire.OtherServer{{Name: "s5", RaftAddr: "10.0.0.5:7010"}},
		OtherGroups: []wire.OtherServer{{Name: "x1", RaftAddr: "10.9.0.1:7010", Group: "g2"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"group: g1", "non-voter (catching up)", "no: no answer",
		"not a member: server s5 (10.0.0.5:7010)", "cairn cluster join --name s5 --raft-addr 10.0.0.5:7010",
		"server x1 (10.9.0.1:7010) of ANOTHER GROUP g2",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("cluster status does not say %q:\n%s", want, out)
		}
	}
}

// cobra's "Did you mean this?" indents its suggestion with a tab: it stays
// a tab.
func TestPrintErrorKeepsSuggestionLayout(t *testing.T) {
	var out bytes.Buffer
	printError(&out, "cairn", errors.New("unknown command \"bakup\" for \"cairn\"\n\nDid you mean this?\n\tbackup\n"))
	if !strings.Contains(out.String(), "Did you mean this?\n\tbackup") {
		t.Fatalf("printed %q", out.String())
	}
}
