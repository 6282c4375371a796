// Command smallsessions appends the hourly incrementals of a quiet client
// (each one changed file of 13 bytes) to one disk volume, as the storage
// node does (open the volume at its committed end, write the session,
// close it), and reports what the volume takes on disk. bench/smallsessions.sh
// builds it in this checkout and in a BASELINE revision and runs both side
// by side; it uses only the API both have.
package main

import (
	"crypto/sha256"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"syscall"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/media/disk"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/google/uuid"
)

type report struct {
	Sessions       int     `json:"sessions"`
	BlockSize      int     `json:"block_size"`
	FormatVersion  int     `json:"format_version"`
	FileBytes      int64   `json:"file_bytes"`
	AllocatedBytes int64   `json:"allocated_bytes"`
	SessionBytes   float64 `json:"bytes_per_session"`
	StoredBytes    int64   `json:"stored_bytes"`
	Seconds        float64 `json:"seconds"`
}

func main() {
	dir := flag.String("dir", "", "an empty directory for the disk pool")
	n := flag.Int("n", 1000, "number of hourly incrementals")
	bs := flag.Int("block-size", volume.DefaultBlockSize, "the pool's block size")
	flag.Parse()
	if *dir == "" {
		log.Fatal("smallsessions: -dir is required")
	}
	p := &disk.Pool{Name: "Quiet", Dir: *dir, BlockSize: *bs}
	id := uuid.New()
	start := time.Now().UTC()
	if err := p.Create("Quiet-0001", volume.Label{VolumeID: id, Created: start}); err != nil {
		log.Fatal(err)
	}
	m := sha256.Sum256([]byte("smallsessions"))
	key := &volume.Key{ID: "bench", Material: m[:]}
	end := int64(*bs)
	var stored int64
	for i := range *n {
		a, err := p.OpenAppend("Quiet-0001", id, end)
		if err != nil {
			log.Fatal(err)
		}
		info := volume.SessionInfo{SessionID: uuid.New(), JobID: uint64(i + 1), BackupID: uint64(i + 1), Client: "quiet", Level: "incremental",
			Pool: "Quiet", Created: start.Add(time.Duration(i) * time.Hour), Compression: volume.CompressionZstd}
		w, err := volume.NewSessionWriter(info, key, a, volume.WriterOptions{TempDir: *dir})
		if err != nil {
			log.Fatal(err)
		}
		content := fmt.Appendf(nil, "hello, %05d\n", i%100000)
		b := volume.AppendRecord(nil, volume.RecFileHeader, fileindex.AppendEntry(nil, &fileindex.Entry{Path: "/etc/motd", Type: fileindex.TypeFile, Mode: 0o644, Size: int64(len(content)), MTime: info.Created.UnixNano()}))
		b = volume.AppendDataRecord(b, 0, content)
		h := sha256.Sum256(content)
		if err := w.Write(volume.AppendFileEnd(b, volume.EndOK, h[:])); err != nil {
			log.Fatal(err)
		}
		res, err := w.Close()
		if err != nil {
			log.Fatal(err)
		}
		res.Index.Close()
		end = res.Parts[len(res.Parts)-1].End
		stored += res.StoredBytes
		if err := a.Close(); err != nil {
			log.Fatal(err)
		}
	}
	path, _ := p.Path("Quiet-0001")
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		log.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		log.Fatal(err)
	}
	l, err := volume.ReadLabel(f)
	f.Close()
	if err != nil {
		log.Fatal(err)
	}
	r := report{Sessions: *n, BlockSize: *bs, FormatVersion: l.FormatVersion, FileBytes: st.Size, AllocatedBytes: st.Blocks * 512,
		SessionBytes: float64(st.Size-int64(*bs)) / float64(*n), StoredBytes: stored, Seconds: time.Since(start).Seconds()}
	json.NewEncoder(os.Stdout).Encode(r)
}
