package volume

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/google/uuid"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// benchData is one block's worth of plaintext of each kind: log-like text,
// which compresses about 5:1, and random bytes, which stand for media,
// archives and encrypted files and do not compress at all.
func benchData(kind string, n int) []byte {
	switch kind {
	case "text":
		return textLike(rand.New(rand.NewPCG(42, 42)), n)
	case "random":
		b := make([]byte, n)
		rand.NewChaCha8([32]byte{42}).Read(b)
		return b
	}
	panic(kind)
}

// parallel runs b.N operations spread over workers goroutines, each with
// its own state from setup, as the writer's and reader's worker pools do.
func parallel[S any](b *testing.B, workers int, setup func() S, op func(S)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	states := make([]S, workers)
	for i := range states {
		states[i] = setup()
	}
	b.ResetTimer()
	for _, s := range states {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				op(s)
			}
		}()
	}
	wg.Wait()
}

// BenchmarkBlockPipeline measures the per-block transform of a 1 MiB data
// block: seal (zstd when it pays, AES-256-GCM, CRC32C) and open (CRC check,
// decrypt, decompress), with one and two goroutines. MB/s is plaintext.
func BenchmarkBlockPipeline(b *testing.B) {
	key := testKey("bench")
	sess := uuid.New()
	for _, kind := range []string{"text", "random"} {
		plain := benchData(kind, DefaultBlockRawSize)
		s, _ := newSealer(key, sess, CompressionZstd)
		sealed := s.seal(nil, BlockHeader{Kind: KindData, SessionID: sess, Seq: 1}, plain)
		h, _ := ParseBlockHeader(sealed)
		for _, dir := range []string{"seal", "open"} {
			for _, workers := range []int{1, 2} {
				b.Run(fmt.Sprintf("data=%s/dir=%s/workers=%d", kind, dir, workers), func(b *testing.B) {
					b.SetBytes(int64(len(plain)))
					// After the run: ResetTimer drops metrics reported before it.
					defer b.ReportMetric(float64(len(sealed))/float64(len(plain)), "stored/raw")
					switch dir {
					case "seal":
						type st struct {
							s   *sealer
							out []byte
						}
						parallel(b, workers, func() *st {
							s, _ := newSealer(key, sess, CompressionZstd)
							return &st{s: s, out: make([]byte, 0, sealedCap(len(plain)))}
						}, func(x *st) {
							x.out = x.s.seal(x.out, BlockHeader{Kind: KindData, SessionID: sess, Seq: 1}, plain)
						})
					case "open":
						// open decrypts in place, so each op first copies the
						// sealed block into the buffer a read would fill.
						type st struct {
							o        *opener
							raw, out []byte
						}
						parallel(b, workers, func() *st {
							o, _ := newOpener(key, sess)
							return &st{o: o, raw: make([]byte, len(sealed)), out: make([]byte, 0, len(plain))}
						}, func(x *st) {
							copy(x.raw, sealed)
							if blockCRC(x.raw[:HeaderSize], x.raw[HeaderSize:]) != h.CRC {
								panic("crc")
							}
							var err error
							if x.out, err = x.o.open(x.out, &h, x.raw); err != nil {
								panic(err)
							}
						})
					}
				})
			}
		}
	}
}

// BenchmarkCompressChoice backs the choice of zstd level and of the
// incompressibility probe: compression alone, one goroutine, 1 MiB blocks.
func BenchmarkCompressChoice(b *testing.B) {
	for _, kind := range []string{"text", "random"} {
		plain := benchData(kind, DefaultBlockRawSize)
		for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression} {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
			b.Run(fmt.Sprintf("data=%s/level=%s", kind, level), func(b *testing.B) {
				b.SetBytes(int64(len(plain)))
				out := make([]byte, 0, sealedCap(len(plain)))
				for b.Loop() {
					out = enc.EncodeAll(plain, out[:0])
				}
				b.ReportMetric(float64(len(out))/float64(len(plain)), "stored/raw")
			})
		}
		// S2 (klauspost/compress/s2, the same module) is what a faster,
		// larger choice would cost and store: not a codec of the format.
		b.Run(fmt.Sprintf("data=%s/s2", kind), func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			out := make([]byte, s2.MaxEncodedLen(len(plain)))
			var n int
			for b.Loop() {
				n = len(s2.Encode(out, plain))
			}
			b.ReportMetric(float64(n)/float64(len(plain)), "stored/raw")
		})
		b.Run(fmt.Sprintf("data=%s/probe", kind), func(b *testing.B) {
			b.SetBytes(int64(len(plain)))
			scratch := make([]byte, 0, probeCap)
			enc := zstdEncoders.Get().(*zstd.Encoder)
			for b.Loop() {
				looksIncompressible(CompressionZstd, plain, scratch, enc)
			}
		})
	}
}

// BenchmarkSessionWriter measures a session end to end into an Appender
// that discards: parsing records, packing, sealing on the workers and
// writing in order, 1 MiB files sent as 64 KiB Data records. MB/s is file
// content.
func BenchmarkSessionWriter(b *testing.B) {
	key := testKey("bench")
	for _, kind := range []string{"text", "random"} {
		content := benchData(kind, 1<<20)
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("data=%s/workers=%d", kind, workers), func(b *testing.B) {
				info := SessionInfo{SessionID: uuid.New(), Compression: CompressionZstd}
				w, err := NewSessionWriter(info, key, &discardAppender{id: uuid.New()}, WriterOptions{Workers: workers, TempDir: b.TempDir()})
				if err != nil {
					b.Fatal(err)
				}
				// The agent's part (records, content hash) is made once; only
				// the FileHeader, which names the path, changes per file.
				f := tfile{e: fileindex.Entry{Path: "/bench/x", Type: fileindex.TypeFile, Size: int64(len(content))}, content: content}
				body := appendEntryRecords(nil, &f, 64<<10)
				_, _, n, _ := ParseRecord(body)
				body = body[n:]
				var hdr []byte
				b.SetBytes(int64(len(content)))
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					f.e.Path = fmt.Sprintf("/bench/%09d", i)
					hdr = AppendRecord(hdr[:0], RecFileHeader, fileindex.AppendEntry(nil, &f.e))
					if err := w.Write(hdr); err != nil {
						b.Fatal(err)
					}
					if err := w.Write(body); err != nil {
						b.Fatal(err)
					}
				}
				res, err := w.Close()
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(res.StoredBytes)/float64(max(res.ContentBytes, 1)), "stored/raw")
			})
		}
	}
}
