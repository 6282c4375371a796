package s3vol

import (
	"context"
	"testing"

	"github.com/cairnbackup/cairn/internal/s3test"
)

// BenchmarkRestoreReads reads a 48 MiB volume on a real versitygw on
// loopback the way a restore reads a session, a block and the next
// block's header at a time (256 KiB + 64 bytes, each read beginning where
// the last ended), with range reads alone (plain) and reading ahead
// (ahead): side by side in one run. -benchtime=Nx with -count to compare.
func BenchmarkRestoreReads(b *testing.B) {
	s := s3test.Start(b)
	s.Bucket(b, "bench", false)
	p := testPool(b, testConfig(s, "bench"))
	a := newVolume(b, p, "Bench-0001", Lock{})
	for range 3 {
		writeSession(b, a, 16<<20)
	}
	const block = 256<<10 + 64
	for _, c := range []struct {
		name  string
		ahead bool
	}{{"plain", false}, {"ahead", true}} {
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, block)
			var size int64
			for b.Loop() {
				r, err := p.OpenRead(context.Background(), "Bench-0001")
				if err != nil {
					b.Fatal(err)
				}
				if c.ahead {
					r.ReadAhead(0, 0)
				}
				size = r.Size()
				for off := int64(0); off < size; off += block {
					if _, err := r.ReadAt(buf[:min(block, size-off)], off); err != nil {
						b.Fatal(err)
					}
				}
				r.Close()
			}
			b.SetBytes(size)
		})
	}
}
