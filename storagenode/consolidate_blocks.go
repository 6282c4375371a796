package storagenode

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cairnbackup/cairn/assemble"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/tmpfile"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/wire"
)

// A large file of the chain whose version keeps blocks of earlier
// sessions (package chunk) comes to a consolidation as a restore's does:
// its entry, with the blocks it sent, in the read of its own session, and
// each kept block in the read of the session that holds it, announced by
// a BlockStart. The synthetic full must not depend on the old sessions
// (they expire once it exists), so the node assembles the file, as the
// agent does on a restore (package assemble), in a temporary file of its
// own, checks it against the digest of its content, and writes it into
// the new session block by block, each block starting a Data record, with
// a block list whose blocks all lie in the new session. The session
// writer places them, and the next incremental builds on that list.
//
// Every read of the chain comes before the entries are written (the
// staged backups are read first, and a kept block of the full lies at
// the older version of the same path, before the full's next entry), so
// a file's blocks are all in by the time its entry goes to the writer.

// rebuild holds the files being assembled.
type rebuild struct {
	dir string
	// split are the paths the plan reads blocks of: their entries are
	// assembled; every other entry goes to the writer as it came.
	split map[string]bool
	files map[string]*rebuilt
	blk   *assemble.Block
	into  *rebuilt // the file of blk
	cur   *rebuilt // the entry being assembled in the merge
	buf   []byte
	// assembled counts the bytes of the files assembled, which went
	// through the node's disk as the staged changes do.
	assembled int64
}

// rebuilt is a file being assembled.
type rebuilt struct {
	path string
	f    *os.File
	got  uint64 // bytes of blocks read by location written so far
	e    fileindex.Entry
	hdr  []byte // its FileHeader, held until the file is whole
}

func newRebuild(dir string) *rebuild {
	return &rebuild{dir: dir, split: map[string]bool{}, files: map[string]*rebuilt{}}
}

// expect notes the paths whose blocks rr reads, before its records come.
func (a *rebuild) expect(rr *wire.ReadRequest) {
	for i := range rr.Locs {
		if rr.Locs[i].Block != nil {
			a.split[string(rr.Locs[i].Path)] = true
		}
	}
}

// file is the assembly of path, made on its first block or entry.
func (a *rebuild) file(path string) (*rebuilt, error) {
	if b := a.files[path]; b != nil {
		return b, nil
	}
	// Nobody else needs the file by name: it goes when it is closed, or
	// with the node.
	f, err := tmpfile.Open(a.dir, "consolidate-*.file", "assembly file")
	if err != nil {
		return nil, fmt.Errorf("assemble %s: %w", path, err)
	}
	b := &rebuilt{path: path, f: f}
	a.files[path] = b
	return b, nil
}

// record takes a record of rr's read if it belongs to a block read by its
// location, and reports whether it did.
func (a *rebuild) record(rr *wire.ReadRequest, t volume.RecordType, body []byte) (bool, error) {
	if t == volume.RecBlockStart {
		if err := a.endBlock(); err != nil {
			return true, err
		}
		i, err := volume.BlockIndex(body)
		if err != nil || i >= len(rr.Locs) || rr.Locs[i].Block == nil {
			return true, fmt.Errorf("session %s: the reader announced block %d, which the read did not ask for", rr.SessionID, i)
		}
		l := &rr.Locs[i]
		if a.into, err = a.file(string(l.Path)); err != nil {
			return true, err
		}
		a.blk = assemble.NewBlock(l.Block.At, l.Loc.Len)
		return true, nil
	}
	if a.blk == nil {
		return false, nil
	}
	if t != volume.RecData {
		return false, a.endBlock()
	}
	off, data, err := volume.DecodeData(body)
	if err != nil {
		return true, fmt.Errorf("session %s: a block of %s: %w", rr.SessionID, a.into.path, err)
	}
	n, err := a.blk.Write(a.into.f, off, data)
	if err != nil {
		return true, fmt.Errorf("session %s: a block of %s: %w", rr.SessionID, a.into.path, err)
	}
	a.into.got += n
	if a.blk.Done() {
		a.blk = nil
	}
	return true, nil
}

// endBlock ends the block under way, which must be whole.
func (a *rebuild) endBlock() error {
	b := a.blk
	a.blk = nil
	if b != nil && !b.Done() {
		return fmt.Errorf("a block of %s ends %d bytes early", a.into.path, b.Left())
	}
	return nil
}

// header takes the FileHeader of an entry on its way to the writer, and
// reports whether the entry is to be assembled (its records held).
func (a *rebuild) header(e *fileindex.Entry, body []byte) (bool, error) {
	if e.Type != fileindex.TypeFile || !a.split[e.Path] {
		return false, nil
	}
	if a.cur != nil {
		return false, fmt.Errorf("entry %q: its FileEnd is missing: the next entry begins before it", a.cur.path)
	}
	b, err := a.file(e.Path)
	if err != nil {
		return false, err
	}
	b.e, b.hdr = *e, append([]byte(nil), body...)
	a.cur = b
	return true, nil
}

// data writes a Data record of the entry being assembled.
func (a *rebuild) data(body []byte) error {
	off, data, err := volume.DecodeData(body)
	if err != nil {
		return fmt.Errorf("entry %q: %w", a.cur.path, err)
	}
	if _, err := a.cur.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("assemble %s: %w", a.cur.path, err)
	}
	return nil
}

// end takes the FileEnd of the entry being assembled: once the file is
// whole and matches its digest, put gets its records as the new session
// holds them.
func (a *rebuild) end(body []byte, put func([]byte) error) error {
	b := a.cur
	a.cur = nil
	delete(a.files, b.path)
	defer b.f.Close()
	status, sum, bl, err := volume.DecodeFileEnd(body)
	if err != nil {
		return fmt.Errorf("entry %q: %w", b.path, err)
	}
	if bl == nil {
		return fmt.Errorf("entry %q: blocks of it were read, but its FileEnd has no block list", b.path)
	}
	if kept := assemble.Kept(bl); b.got < kept {
		return fmt.Errorf("entry %q: %d of the %d bytes of its blocks kept from earlier backups did not come", b.path, kept-b.got, kept)
	}
	a.assembled += int64(bl.Size())
	if len(sum) > 0 {
		// A file with holes is checked, and written, by its data runs:
		// its holes stay holes in the synthetic full.
		size := int64(bl.End())
		if status == volume.EndOK {
			size = b.e.Size
		}
		var got []byte
		var err error
		if b.e.HashKind == fileindex.HashSparseSHA256 {
			got, err = assemble.HashRuns(b.f, bl.Runs, size)
		} else {
			got, err = assemble.HashFile(b.f, int64(bl.Size()))
		}
		if err != nil {
			return fmt.Errorf("assemble %s: %w", b.path, err)
		}
		if !bytes.Equal(got, sum) {
			return fmt.Errorf("entry %q: the file assembled from its blocks does not match the digest of its content", b.path)
		}
	}
	out := volume.AppendRecord(nil, volume.RecFileHeader, b.hdr)
	list := &fileindex.BlockList{Bits: bl.Bits, Blocks: make([]fileindex.Block, len(bl.Blocks)), Runs: bl.Runs}
	if cap(a.buf) < volume.MaxDataBody {
		a.buf = make([]byte, volume.MaxDataBody)
	}
	offs := bl.Offsets()
	for i := range bl.Blocks {
		y, n := offs[i], int64(bl.Blocks[i].Loc.Len)
		list.Blocks[i] = fileindex.Block{Hash: bl.Blocks[i].Hash, Loc: fileindex.Location{Len: uint64(n)}}
		// Each block starts a Data record of its own: the writer
		// places the blocks by them.
		for off := int64(0); off < n; {
			p := a.buf[:min(n-off, volume.MaxDataBody)]
			k, err := b.f.ReadAt(p, y+off)
			if errors.Is(err, io.EOF) {
				clear(p[k:]) // a hole at the end of the file
			} else if err != nil {
				return fmt.Errorf("assemble %s: %w", b.path, err)
			}
			out = volume.AppendDataRecord(out, y+off, p)
			off += int64(len(p))
			if len(out) >= mergeBatch {
				if err := put(out); err != nil {
					return err
				}
				out = out[:0]
			}
		}
	}
	return put(volume.AppendFileEndBlocks(out, status, sum, list))
}

// finish checks that every block read went into an entry written.
func (a *rebuild) finish() error {
	if a.cur != nil {
		return fmt.Errorf("entry %q: its FileEnd is missing", a.cur.path)
	}
	for p := range a.files {
		return fmt.Errorf("blocks of %s were read, but its entry never came", p)
	}
	return nil
}

func (a *rebuild) close() {
	for _, b := range a.files {
		b.f.Close()
	}
}
