package server

import (
	"errors"
	"fmt"
	"testing"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/server/cluster"
	"github.com/cairnbackup/cairn/wire"
)

// A catalog change that did not apply is told with a code and a hint, and
// the error keeps what Raft or the catalog said: errors.Is finds it
// through the code the edge chose.
func TestApplyErrorKeepsTheCause(t *testing.T) {
	s := &Server{cfg: Config{Name: "s1", DataDir: t.TempDir()}}
	shutdown := errors.New("raft is shutdown")
	for _, c := range []struct {
		err   error
		code  string
		cause error
	}{
		{fmt.Errorf("catalog commit_backup: %w", cluster.ErrOutcomeUnknown), wire.CodeOutcomeUnknown, cluster.ErrOutcomeUnknown},
		{fmt.Errorf("apply: %w", catalog.ErrFSMStopped), wire.CodeUnavailable, catalog.ErrFSMStopped},
		{fmt.Errorf("apply: %w", shutdown), wire.CodeUnavailable, shutdown},
	} {
		we := s.applyError(c.err)
		if we.Code != c.code || !errors.Is(we, c.cause) {
			t.Errorf("applyError(%v) = %s %q; errors.Is(cause) = %v", c.err, we.Code, we.Message, errors.Is(we, c.cause))
		}
	}
}
