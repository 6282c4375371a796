package sftpvol

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cairnbackup/cairn/internal/sshdtest"
	"github.com/cairnbackup/cairn/media/volume"
)

// The bandwidth limit holds a pool's mean rate at the limit: 4 MiB at
// 1 MiB/s take four seconds (of the bubble's fake clock), however the
// transfers are cut and however many streams take from the bucket.
func TestLimiterHoldsTheRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const rate = 1 << 20
		l := newLimiter(rate)
		start := time.Now()
		done := make(chan struct{})
		for range 4 { // four streams, 1 MiB each, in uneven pieces
			go func() {
				defer func() { done <- struct{}{} }()
				for _, n := range []int{1, 300 << 10, 700 << 10, 48<<10 - 1} {
					if err := l.wait(context.Background(), n); err != nil {
						t.Error(err)
					}
				}
			}()
		}
		for range 4 {
			<-done
		}
		took := time.Since(start)
		// Never faster than the limit; a little slower as waiters queue.
		if want := 4 * time.Second; took < want || took > want+want/20 {
			t.Fatalf("4 MiB at 1 MiB/s took %v, want %v to 5%% more", took, want)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := l.wait(ctx, 1<<20); err == nil {
			t.Fatal("a canceled wait went through")
		}
	})
}

// Against a real sshd the limit bounds a pool's upload: 3 MiB at 2 MiB/s
// take at least 1.25 s (1.5 s less the quarter second of burst the bucket
// may have filled with while the volume was created), where loopback
// unbounded takes a fraction of that.
func TestBandwidthLimitBoundsAnUpload(t *testing.T) {
	s := sshdtest.Start(t)
	cfg := testConfig(s, filepath.Join(s.Dir, "vols"))
	cfg.BytesPerSecond = 2 << 20
	p := testPool(t, cfg)
	a := newVolume(t, p, "Slow-0001")
	buf := make([]byte, 256<<10)
	start := time.Now()
	for range 12 {
		if _, err := a.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 1250*time.Millisecond {
		t.Fatalf("3 MiB at a limit of 2 MiB/s took %v, want at least 1.25s", took)
	}
	if st := p.Stats(); st.BytesWritten != 3<<20 || !st.Reachable {
		t.Fatalf("the pool's figures say %+v", st)
	}
}

// With several streams a long write goes out over that many connections
// at once, each its own range of the file, and reads back whole over
// them too; a cut of all of them mid-way is redone.
func TestStreamsWriteRangesOverSeveralConnections(t *testing.T) {
	s := sshdtest.Start(t)
	cfg := testConfig(s, filepath.Join(s.Dir, "vols"))
	cfg.Streams = 3
	p := testPool(t, cfg)
	a := newVolume(t, p, "Wide-0001")
	rnd := rand.NewChaCha8([32]byte{'w', 'i', 'd', 'e'})
	var written []byte
	for i := range 4 {
		b := make([]byte, 1<<20+4096*i)
		rnd.Read(b)
		if _, err := a.Write(b); err != nil {
			t.Fatal(err)
		}
		written = append(written, b...)
		if i == 1 && s.KillSessions(t) == 0 {
			t.Fatal("no session process to kill")
		}
	}
	if err := a.Sync(); err != nil {
		t.Fatal(err)
	}
	// Three connections, then three again after the cut.
	if d := p.dials.Load(); d != 6 {
		t.Fatalf("the pool dialled %d connections, want 3 before the cut and 3 after", d)
	}
	got, err := os.ReadFile(filepath.Join(s.Dir, "vols", "Wide-0001.cvol"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[volume.MinBlockSize:], written) {
		t.Fatal("the volume on the target does not hold what was written over three streams")
	}
	r, err := p.OpenRead(context.Background(), "Wide-0001")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	back := make([]byte, len(written))
	if n, err := r.ReadAt(back, volume.MinBlockSize); err != nil || n != len(back) || !bytes.Equal(back, written) {
		t.Fatalf("reading back over three streams: %d bytes, %v", n, err)
	}
	// A read past the end is short, with io.EOF, as ReaderAt says.
	if n, err := r.ReadAt(make([]byte, 1<<20), r.Size()-1000); n != 1000 || err == nil {
		t.Fatalf("a read running past the end gave %d bytes and %v, want 1000 and EOF", n, err)
	}
}

// A target whose disk fills up fails the write with a *FullError saying
// so, not SFTP's bare "failure".
func TestFullTargetSaysSo(t *testing.T) {
	s := sshdtest.Start(t)
	small := s.SmallDir(t, "small", 1<<20)
	p := testPool(t, testConfig(s, small))
	a := newVolume(t, p, "Full-0001")
	var err error
	for range 8 {
		if _, err = a.Write(make([]byte, 256<<10)); err != nil {
			break
		}
	}
	var fe *FullError
	if !errors.As(err, &fe) || fe.Dir != small {
		t.Fatalf("writing 2 MiB to a 1 MiB filesystem gave %v, want a *FullError", err)
	}
	t.Log(err)
}

// Validate names a bad bandwidth, stream count, or streams on an
// append-only target.
func TestValidateTransferFields(t *testing.T) {
	ok := Config{Pool: "P", Host: "h", User: "u", KnownHosts: "k", Dir: "/d"}
	for _, c := range []struct {
		change func(*Config)
		says   string
	}{
		{func(c *Config) { c.BytesPerSecond = -1 }, "negative"},
		{func(c *Config) { c.BytesPerSecond = 1000 }, "below the least"},
		{func(c *Config) { c.Streams = maxStreams + 1 }, "streams"},
		{func(c *Config) { c.AppendOnly, c.Streams = true, 2 }, "set streams to 1"},
	} {
		cfg := ok
		c.change(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%+v: %v, want an error saying %q", cfg, err, c.says)
		}
	}
	ok.AppendOnly, ok.Streams, ok.BytesPerSecond = true, 1, 1<<20
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}
