package agent

import (
	"context"
	"sync"
)

// emitInline makes Source call Emit on Run's own goroutine, as it did
// before the sender: only for the benchmark that measures what the sender
// gains (BenchmarkBackup).
var emitInline = false

// sender runs a Source's Emit on a goroutine of its own, so that reading
// and hashing the next batch overlaps sending this one. On the data port
// sending is TLS encryption and the socket write, about as much CPU per
// byte as the read and the SHA-256: on one goroutine the two took turns
// and a backup kept one core busy. One goroutine takes the batches in the
// order they are handed off, so the stream's records stay in order. It
// holds two batches, the one Run fills and the one being sent: 2 MiB.
type sender struct {
	ctx   context.Context
	emit  func([]byte) error
	queue chan []byte // unbuffered: at most one batch waits for Emit
	free  chan []byte // batches Emit is done with; room for both
	done  chan struct{}

	mu      sync.Mutex
	err     error // of the first Emit that failed
	stopped bool
}

func startSender(ctx context.Context, emit func([]byte) error) *sender {
	s := &sender{ctx: ctx, emit: emit, queue: make(chan []byte), free: make(chan []byte, 2), done: make(chan struct{})}
	s.free <- make([]byte, 0, BatchSize+1) // +1: the probe byte of readRange
	go s.run()
	return s
}

func (s *sender) run() {
	defer close(s.done)
	for b := range s.queue {
		// After a failure the batches are only taken back, so that
		// handOff never blocks on a sender that stopped sending.
		// A job stopped sends no batch that Run filled before it saw it.
		if s.failed() == nil {
			err := s.ctx.Err()
			if err == nil {
				err = s.emit(b)
			}
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
		}
		s.free <- b[:0]
	}
}

func (s *sender) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// handOff queues batch for Emit and returns an empty batch to fill next;
// it waits while the batch before is still being sent. It returns the
// error of an earlier Emit instead, once one failed.
func (s *sender) handOff(batch []byte) ([]byte, error) {
	if err := s.failed(); err != nil {
		return nil, err
	}
	s.queue <- batch
	return <-s.free, nil
}

// stop waits until the batches handed off are sent and returns the error
// of the first Emit that failed. It may be called more than once.
func (s *sender) stop() error {
	s.mu.Lock()
	if !s.stopped {
		s.stopped = true
		close(s.queue)
	}
	s.mu.Unlock()
	<-s.done
	return s.failed()
}
