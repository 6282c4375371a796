package wire

import "testing"

// TestKeyExportHasItsOwnSubject: key export is served on cairn.escrow.,
// which a NATS permission grants apart from the admin API, and nowhere
// else.
func TestKeyExportHasItsOwnSubject(t *testing.T) {
	if got := APISubject(OpKeyExport); got != "cairn.escrow.key.export" {
		t.Fatalf("APISubject(%s) = %s", OpKeyExport, got)
	}
	if op, ok := TrimAPI("cairn.escrow.key.export"); !ok || op != OpKeyExport {
		t.Fatalf("TrimAPI of the escrow subject = %q, %v", op, ok)
	}
	// Rotating the group's secrets replaces what every data key is
	// wrapped with: a key admin's too.
	if got := APISubject(OpSecretsRotate); got != "cairn.escrow.secrets.rotate" {
		t.Errorf("APISubject(%s) = %s, want it below cairn.escrow.", OpSecretsRotate, got)
	}
	for _, s := range []string{"cairn.api.key.export", "cairn.api.secrets.rotate", "cairn.escrow.job.list", "cairn.escrow.", "cairn.api."} {
		if op, ok := TrimAPI(s); ok {
			t.Errorf("TrimAPI(%q) = %q: an operation off its own subject", s, op)
		}
	}
	if op, ok := TrimAPI(APISubject(OpJobList)); !ok || op != OpJobList {
		t.Errorf("TrimAPI of job.list's subject = %q, %v", op, ok)
	}
	pub, sub := RoleSubjects(KindAdmin, "alice")
	for _, p := range pub {
		if p == EscrowWildcard || p == ">" {
			t.Errorf("an admin may publish %s without the key grant", p)
		}
	}
	if len(sub) == 0 || sub[0] != "_INBOX.admin.alice.>" {
		t.Errorf("admin alice subscribes %v, want her own inbox _INBOX.admin.alice.> first", sub)
	}
}
