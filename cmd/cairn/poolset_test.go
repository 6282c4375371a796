package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// TestPoolSetCompressionEndToEnd: 'cairn pool set --compression s2' makes
// the backups that start after it S2 on the volume (its part header and
// its data blocks' flags, read from the pool directory), 'pool list'
// shows it, and the files restore; set back to zstd, the next backup is
// zstd while the S2 one still restores as it was written.
func TestPoolSetCompressionEndToEnd(t *testing.T) {
	ctx := devCLI(t)
	src := t.TempDir()
	content := map[string][]byte{}
	for i := range 3 {
		var b bytes.Buffer
		for j := 0; b.Len() < 1<<20; j++ {
			fmt.Fprintf(&b, "2026-03-01T10:%02d:%02d host%d sshd[%d]: Accepted publickey for user%d from 10.0.%d.%d port %d\n",
				j/60%60, j%60, i, 1000+j%97, j%13, j%7, j%250, 40000+j%1000)
		}
		content[fmt.Sprintf("log%d.txt", i)] = b.Bytes()
	}
	content["small"] = []byte("a small file\n")
	for name, c := range content {
		mustWriteFile(t, filepath.Join(src, name), c, 0o644)
	}

	if got := poolCompression(t, ctx, "Default"); got != "zstd" {
		t.Fatalf("a new pool compresses with %q, want zstd", got)
	}
	code, out, stderr := cli(ctx, "pool", "set", "Default", "--compression", "s2")
	if code != 0 || out != "pool Default: compression s2, for the backups that start from now on\n" {
		t.Fatalf("pool set: exit %d, %q %q", code, out, stderr)
	}
	if got := poolCompression(t, ctx, "Default"); got != "s2" {
		t.Fatalf("pool list --json after pool set: compression %q", got)
	}
	code, out, stderr = cli(ctx, "pool", "list")
	if lines := strings.Split(out, "\n"); code != 0 || len(lines) < 2 || !strings.Contains(lines[0], "COMPRESSION") ||
		!strings.HasPrefix(rowOf(lines, "Default"), "Default") || !strings.Contains(rowOf(lines, "Default"), " s2 ") {
		t.Fatalf("pool list: exit %d, %q %q", code, out, stderr)
	}

	fast := cliJob(t, ctx, "backup", "--client", "web", "--path", src, "--level", "full", "--wait")
	if fast.State != "success" {
		t.Fatalf("backup to an s2 pool: %s %s %q", fast.State, fast.Error, fast.Log)
	}
	if s2, zstd := sessionBlocks(t, ctx, fast.ID, volume.CompressionS2); s2 == 0 || zstd != 0 {
		t.Fatalf("backup to an s2 pool: %d data blocks S2, %d zstd", s2, zstd)
	}
	restoreAndCompare(t, ctx, fast.ID, src, content)

	// Back to zstd: the next backup is zstd, and the S2 one stays S2.
	if code, out, stderr := cli(ctx, "--json", "pool", "set", "Default", "--compression", "zstd"); code != 0 ||
		out != "{\n  \"name\": \"Default\",\n  \"compression\": \"zstd\"\n}\n" {
		t.Fatalf("pool set --json: exit %d, %q %q", code, out, stderr)
	}
	small := cliJob(t, ctx, "backup", "--client", "web", "--path", src, "--level", "full", "--wait")
	if small.State != "success" {
		t.Fatalf("backup after setting zstd again: %s %s %q", small.State, small.Error, small.Log)
	}
	if s2, zstd := sessionBlocks(t, ctx, small.ID, volume.CompressionZstd); s2 != 0 || zstd == 0 {
		t.Fatalf("backup after setting zstd again: %d data blocks S2, %d zstd", s2, zstd)
	}
	if s2, _ := sessionBlocks(t, ctx, fast.ID, volume.CompressionS2); s2 == 0 {
		t.Fatal("the S2 backup's blocks changed")
	}
	restoreAndCompare(t, ctx, fast.ID, src, content)
}

// TestPoolSetRefusals: a pool that does not exist is the servers' refusal
// with its hint (exit 1); a codec that does not exist, or none given, is a
// usage error that says what to give (exit 2), and the pool is unchanged.
func TestPoolSetRefusals(t *testing.T) {
	ctx := devCLI(t)
	code, out, stderr := cli(ctx, "pool", "set", "Nosuch", "--compression", "s2")
	if code != 1 || out != "" || !strings.Contains(stderr, `error: pool "Nosuch" does not exist`) ||
		!strings.Contains(stderr, "hint: list pools with 'cairn pool list'") {
		t.Fatalf("pool set of an unknown pool: exit %d, %q %q", code, out, stderr)
	}
	code, _, stderr = cli(ctx, "--json", "pool", "set", "Nosuch", "--compression", "s2")
	if e := decodeJSONError(t, stderr); code != 1 || e == nil || e.Code != wire.CodeNotFound || e.Hint == "" {
		t.Fatalf("pool set of an unknown pool, --json: exit %d, %q", code, stderr)
	}
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"pool", "set", "Default", "--compression", "lz4"}, `unknown compression "lz4": use zstd (the default: smallest), s2 (fastest, stores more) or none`},
		{[]string{"pool", "set", "Default", "--compression", ""}, "use zstd"},
		{[]string{"pool", "set", "Default"}, "pass --compression zstd, s2 or none"},
		{[]string{"pool", "set", "--compression", "s2"}, "accepts 1 arg"},
	} {
		code, out, stderr := cli(ctx, c.args...)
		if code != exitUsage || out != "" || !strings.Contains(stderr, c.says) || !strings.Contains(stderr, "hint: see 'cairn pool set --help'") {
			t.Errorf("%v: exit %d, %q %q; want exit %d saying %q", c.args, code, out, stderr, exitUsage, c.says)
		}
	}
	if got := poolCompression(t, ctx, "Default"); got != "zstd" {
		t.Fatalf("refused pool sets left the pool at %q", got)
	}
}

// poolCompression is pool's compression as 'pool list --json' shows it.
func poolCompression(t *testing.T, ctx context.Context, pool string) string {
	t.Helper()
	code, out, stderr := cli(ctx, "--json", "pool", "list")
	var pools []wire.PoolInfo
	if code != 0 || json.Unmarshal([]byte(out), &pools) != nil {
		t.Fatalf("pool list --json: exit %d, %q %q", code, out, stderr)
	}
	for _, p := range pools {
		if p.Name == pool {
			return p.Compression
		}
	}
	t.Fatalf("pool list --json has no pool %s: %s", pool, out)
	return ""
}

// rowOf is the line of a table that starts with name.
func rowOf(lines []string, name string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

// sessionBlocks reads the parts job wrote on the volumes of the pool
// directory, as files, with no catalog: each part's header must name
// codec, and it counts the data blocks stored S2 and stored zstd (a block
// that does not compress is stored raw, with neither flag).
func sessionBlocks(t *testing.T, ctx context.Context, job uint64, codec string) (s2, zstd int) {
	t.Helper()
	code, out, stderr := cli(ctx, "--json", "volume", "list", "--pool", "Default")
	var vols []wire.VolumeInfo
	if code != 0 || json.Unmarshal([]byte(out), &vols) != nil || len(vols) == 0 {
		t.Fatalf("volume list --json: exit %d, %q %q", code, out, stderr)
	}
	parts := 0
	for _, vi := range vols {
		data, err := os.ReadFile(vi.Path)
		if err != nil {
			t.Fatal(err)
		}
		v, err := volume.OpenVolume(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatalf("volume %s: %v", vi.Path, err)
		}
		ps, err := v.Parts()
		if err != nil {
			t.Fatalf("volume %s: %v", vi.Path, err)
		}
		for _, p := range ps {
			if p.Header.JobID != job {
				continue
			}
			parts++
			if p.Torn || p.Header.Compression != codec {
				t.Fatalf("job %d's part on %s: torn %v, compression %q; want %s", job, vi.Name, p.Torn, p.Header.Compression, codec)
			}
			for off := p.DataStart; off < p.End; {
				h, err := volume.ParseBlockHeader(data[off:])
				if err != nil || (h.Kind != volume.KindData && h.Kind != volume.KindIndex) {
					break // the PartEnd, or the padding after it
				}
				if h.Kind == volume.KindData {
					if h.Flags&volume.FlagS2 != 0 {
						s2++
					}
					if h.Flags&volume.FlagZstd != 0 {
						zstd++
					}
				}
				off += h.Size()
			}
		}
	}
	if parts == 0 {
		t.Fatalf("no volume of pool Default holds a part of job %d", job)
	}
	return s2, zstd
}

// restoreAndCompare restores backup into a new directory and compares
// every file of content (below src) with what came back.
func restoreAndCompare(t *testing.T, ctx context.Context, backup uint64, src string, content map[string][]byte) {
	t.Helper()
	to := t.TempDir()
	r := cliJob(t, ctx, "restore", "--client", "web", "--backup", strconv.FormatUint(backup, 10), "--to", to)
	if r.State != "success" {
		t.Fatalf("restore of backup %d: %s %s %q", backup, r.State, r.Error, r.Log)
	}
	for name, c := range content {
		if got, err := os.ReadFile(filepath.Join(to, src, name)); err != nil || !bytes.Equal(got, c) {
			t.Errorf("backup %d: %s restored as %d bytes (%v), want %d", backup, name, len(got), err, len(c))
		}
	}
}
