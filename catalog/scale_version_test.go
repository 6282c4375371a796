package catalog

// What BenchmarkScale* measures that changed with format 6: the server's
// client list and its expiry pass, as this revision does them.
// bench/catalogscale.sh gives the baseline revision its own version of
// this file.

// clientSummary is what the client list reads of a client's backups.
func clientSummary(s *Store, client string) (BackupSummary, error) { return s.BackupSummary(client) }

// expiryPass plans and expires as server.expire does: a chunk of clients
// at a time (expiryChunk there), each cut into commands of 2000 backups.
func expiryPass(s *Store, rf RetentionFor, apply func(*BackupsExpire)) error {
	for after := ""; ; {
		plan, next, err := s.PlanExpiryFrom(after, 100_000, rf, true)
		if err != nil {
			return err
		}
		for _, e := range plan.Batches(2000, "expiry pass") {
			apply(e)
		}
		if next == "" {
			return nil
		}
		after = next
	}
}
