package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/wire"
)

// Starts (backup, restore, media label, library moves) carry a request id:
// the servers carry out a request id once, and answer a repeat with what
// the first did. So the CLI retries a start whose answer it did not get,
// with the same id, for startRetryWindow, and says the outcome is unknown
// (exitUnknown) only if it still could not tell. A script may repeat a command
// with the --request-id it printed, or its own, just as safely.

// startRetryWindow is how long a start is retried after unclear answers by
// default (--retry-for): a leader election takes seconds. The servers void
// a start nobody confirmed after their start_confirm_timeout (2 minutes by
// default), which must stay longer than this window and one --timeout.
const startRetryWindow = time.Minute

// bindRequestID adds --request-id and --retry-for to a command that starts
// something.
func bindRequestID(f *pflag.FlagSet, id *string, g *globals) {
	f.StringVar(id, "request-id", "", "name this request (a UUID by default): run the command again with the same id after an unclear answer, and it is carried out once")
	bindRetryFor(f, g)
}

func bindRetryFor(f *pflag.FlagSet, g *globals) {
	f.DurationVar(&g.retryFor, "retry-for", startRetryWindow, "keep trying this long, with the same request id, while the servers' answer is unclear (a leader election)")
}

// newStart names a start: the user's request id, which may have been sent
// before, or a new one.
func newStart(id string) wire.Start {
	if id != "" {
		return wire.Start{RequestID: id, Retry: true}
	}
	return wire.Start{RequestID: uuid.NewString()}
}

// start makes a start request, retrying while its answer is unclear. st is
// set on req by the caller through setStart, so each try carries it with
// Retry set once it may have been sent before.
func (g *globals) start(ctx context.Context, nc *nats.Conn, op, what string, st wire.Start, req func(wire.Start) any, resp any) error {
	window := g.retryFor
	if window <= 0 {
		window = startRetryWindow // a command without the flag (cairn demo)
	}
	deadline := time.Now().Add(window)
	pause := 250 * time.Millisecond
	uncertain := false
	for {
		err := g.call(ctx, nc, op, req(st), resp)
		if err == nil {
			return nil
		}
		code := wire.CodeOf(err)
		switch {
		case code == wire.CodeOutcomeUnknown, errors.Is(err, wire.ErrNoAnswer):
			// It may have been carried out: only the same id may try again.
			uncertain = true
		case code == wire.CodeNotLeader, code == wire.CodeUnavailable:
			// Not carried out: no leader yet, or nothing answered.
		default:
			return err // an answer: failed, and never carried out
		}
		st.Retry = true
		if time.Now().After(deadline) || ctx.Err() != nil {
			if !uncertain {
				return err
			}
			return wire.Errorf(wire.CodeOutcomeUnknown,
				fmt.Sprintf("run the same command again with --request-id %s: it is carried out once, however often it is sent; or look for it with 'cairn job list --request-id %s'",
					st.RequestID, st.RequestID),
				"could not tell whether %s (request %s) was carried out: %w", what, st.RequestID, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, 4*time.Second)
	}
}
