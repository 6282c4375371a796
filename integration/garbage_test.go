package integration

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/wire"
)

// TestGarbageOnNATS publishes malformed and unknown messages, with a reply
// inbox, on the subjects the server, the storage node and the agent answer:
// each gets an error reply with a code, a message and a hint, and every
// process lives on and still works.
func TestGarbageOnNATS(t *testing.T) {
	s := newStack(t, stackOpts{})
	// With the server's credential, the one allowed to publish on every
	// role's subjects.
	nc := s.connect(wire.KindServer, "s1")

	garbage := []byte("\x00\xffnot json{{")
	envelope := func(body string) []byte { return []byte(`{"v":1,"body":` + body + `}`) }
	for _, c := range []struct {
		name, subject string
		data          []byte
		code          string
	}{
		{"server: not JSON", wire.APISubject(wire.OpJobShow), garbage, wire.CodeBadRequest},
		{"server: empty message", wire.APISubject(wire.OpJobList), nil, wire.CodeBadRequest},
		{"server: a version from the future", wire.APISubject(wire.OpJobList), []byte(`{"v":99,"body":{}}`), wire.CodeUnsupportedVersion},
		{"server: unknown operation", wire.APISubject("no.such.op"), envelope(`{}`), wire.CodeUnknownOperation},
		{"server: body of the wrong shape", wire.APISubject(wire.OpBackupStart), envelope(`[1,2,3]`), wire.CodeBadRequest},
		{"server: field of the wrong type", wire.APISubject(wire.OpJobShow), envelope(`{"id":"seven"}`), wire.CodeBadRequest},
		{"server: backup of no client", wire.APISubject(wire.OpBackupStart), envelope(`{}`), wire.CodeInvalidArgument},
		{"server: client name with wildcards", wire.APISubject(wire.OpBackupStart), envelope(`{"client":"web.>","paths":["/"]}`), wire.CodeInvalidArgument},
		{"server from a node: not JSON", wire.FromNodeSubject(s.node, wire.OpSessionCommit), garbage, wire.CodeBadRequest},
		{"server from a node: unknown operation", wire.FromNodeSubject(s.node, "no.such"), envelope(`{}`), wire.CodeUnknownOperation},
		{"server from a node: commit of no job", wire.FromNodeSubject(s.node, wire.OpSessionCommit), envelope(`{"job_id":424242}`), wire.CodeNotFound},
		{"server from a node: register as another", wire.FromNodeSubject(s.node, wire.OpNodeRegister), envelope(`{"id":"other"}`), wire.CodeInvalidArgument},
		{"server from an agent: not JSON", wire.FromAgentSubject(s.client, wire.OpJobDone), garbage, wire.CodeBadRequest},
		{"server from an agent: report of no job", wire.FromAgentSubject(s.client, wire.OpJobDone), envelope(`{"job_id":424242}`), wire.CodeNotFound},
		{"node: not JSON", wire.NodeSubject(s.node, wire.OpPing), garbage, wire.CodeBadRequest},
		{"node: a version from the future", wire.NodeSubject(s.node, wire.OpPing), []byte(`{"v":2}`), wire.CodeUnsupportedVersion},
		{"node: unknown operation", wire.NodeSubject(s.node, "no.such"), envelope(`{}`), wire.CodeUnknownOperation},
		{"node: body of the wrong shape", wire.NodeSubject(s.node, wire.OpPing), envelope(`"ping"`), wire.CodeBadRequest},
		{"agent: not JSON", wire.AgentSubject(s.client, wire.OpRunBackup), garbage, wire.CodeBadRequest},
		{"agent: unknown operation", wire.AgentSubject(s.client, "no.such"), envelope(`{}`), wire.CodeUnknownOperation},
		{"agent: order of the wrong shape", wire.AgentSubject(s.client, wire.OpRunBackup), envelope(`{"job_id":"one","paths":7}`), wire.CodeBadRequest},
		{"agent: empty backup order", wire.AgentSubject(s.client, wire.OpRunBackup), envelope(`{}`), wire.CodeBadRequest},
		{"agent: empty restore order", wire.AgentSubject(s.client, wire.OpRunRestore), envelope(`{}`), wire.CodeBadRequest},
		{"agent: restore order of the wrong shape", wire.AgentSubject(s.client, wire.OpRunRestore), envelope(`[]`), wire.CodeBadRequest},
	} {
		msg, err := nc.Request(c.subject, c.data, 10*time.Second)
		if err != nil {
			t.Errorf("%s: no reply on %s: %v", c.name, c.subject, err)
			continue
		}
		var env wire.Envelope
		if err := json.Unmarshal(msg.Data, &env); err != nil {
			t.Errorf("%s: the reply is not an envelope: %v: %q", c.name, err, msg.Data)
			continue
		}
		switch e := env.Error; {
		case e == nil:
			t.Errorf("%s: on %s got a success reply %s, want error %s", c.name, c.subject, env.Body, c.code)
		case e.Code != c.code || e.Message == "" || e.Hint == "":
			t.Errorf("%s: on %s got error %+v, want code %s with a message and a hint", c.name, c.subject, *e, c.code)
		}
	}
	// The same garbage with no reply inbox: nothing to answer, nothing to
	// crash either.
	for _, subj := range []string{
		wire.APISubject(wire.OpBackupStart), wire.NodeBeatSubject(s.node), wire.AgentBeatSubject(s.client),
		wire.AgentProgressSubject(s.client), wire.NodeSubject(s.node, wire.OpPing),
		wire.AgentSubject(s.client, wire.OpRunRestore),
	} {
		if err := nc.Publish(subj, garbage); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Everyone is alive, said nothing of a panic, and still works.
	for _, p := range []*proc{s.server, s.storage, s.agent} {
		if !p.alive() {
			t.Fatalf("%s died of the garbage: %v", p.name, p.exitErr())
		}
		if strings.Contains(p.logText(), "panic") {
			t.Errorf("%s logged a panic", p.name)
		}
	}
	s.waitReady()
	src := makeTree(t, smallSpec(19))
	snap := snapshot(t, src)
	s.backup("full", src)
	to := filepath.Join(t.TempDir(), "restore")
	s.restore(to)
	checkRestored(t, snap, to, src)
}
