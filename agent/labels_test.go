package agent

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/poll"
)

// The agent reports its config's labels when it registers, for policies to
// select it by; a malformed one is refused naming the field.
func TestAgentReportsItsLabels(t *testing.T) {
	_, _, srv := startAgent(t, nil, "", func(a *Agent) { a.cfg.Labels = []string{"role=db", "env=prod"} })
	poll.Until(t, 10*time.Second, func() error {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		if len(srv.registered) == 0 {
			return errors.New("not registered")
		}
		return nil
	})
	srv.mu.Lock()
	got, reported := srv.registered[0].Labels, srv.registered[0].ReportsLabels
	srv.mu.Unlock()
	if !reflect.DeepEqual(got, map[string]string{"role": "db", "env": "prod"}) || !reported {
		t.Fatalf("registered with labels %v (reported: %v)", got, reported)
	}

	cfg := DefaultConfig()
	cfg.Name, cfg.Labels = "web", []string{"role"}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "labels") || !strings.Contains(err.Error(), "KEY=VALUE") {
		t.Fatalf("a label without a value: %v", err)
	}
}
