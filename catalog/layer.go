package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"sort"
	"sync"

	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/fileindex"
)

// A segment is stored chunked (fileindex.ChunkSegment): in its bucket of
// segment_data, "x" holds the chunk index and "c" the compressed chunks one
// after another. A segment of a catalog of format 4 or before, or one that
// did not decode when it came (damage is reported when it is read, as
// before), is stored whole under "d".
var (
	segDataKey   = []byte("d")
	segChunksKey = []byte("c")
	segIndexKey  = []byte("x")
)

// Each segment lives in a bucket of its own. Stored side by side as plain
// values, four ~400 KiB segments share a leaf that bbolt never splits, and
// every new segment rewrote the ones before it: 4.4 bytes written per byte
// stored. In separate buckets a new segment writes only itself and a small
// parent page.
func putSegData(tx *bbolt.Tx, k, data []byte) error {
	b, err := tx.Bucket(bSegData).CreateBucket(k)
	if err != nil {
		return err
	}
	return putSegChunks(b, data)
}

func putSegChunks(b *bbolt.Bucket, data []byte) error {
	index, chunks, err := fileindex.ChunkSegment(data, 0)
	if err != nil {
		return b.Put(segDataKey, data)
	}
	if err := b.Put(segIndexKey, index); err != nil {
		return err
	}
	return b.Put(segChunksKey, chunks)
}

// segDataEqual tells whether the segment stored at k was stored from data.
func segDataEqual(tx *bbolt.Tx, k, data []byte) bool {
	b := tx.Bucket(bSegData).Bucket(k)
	if b == nil {
		return false
	}
	if whole := b.Get(segDataKey); whole != nil {
		return bytes.Equal(whole, data)
	}
	index, chunks, err := fileindex.ChunkSegment(data, 0)
	return err == nil && bytes.Equal(b.Get(segIndexKey), index) && bytes.Equal(b.Get(segChunksKey), chunks)
}

func deleteSegData(tx *bbolt.Tx, k []byte) error {
	err := tx.Bucket(bSegData).DeleteBucket(k)
	if errors.Is(err, bbolt.ErrBucketNotFound) {
		return nil
	}
	return err
}

// chunkSegments stores every segment stored whole chunked instead: the
// upgrade to format 5. A segment that does not decode stays whole.
func chunkSegments(tx *bbolt.Tx) error {
	var keys [][]byte
	err := tx.Bucket(bSegData).ForEachBucket(func(k []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range keys {
		b := tx.Bucket(bSegData).Bucket(k)
		whole := b.Get(segDataKey)
		if whole == nil {
			continue
		}
		index, chunks, err := fileindex.ChunkSegment(whole, 0)
		if err != nil {
			continue
		}
		if err := b.Put(segIndexKey, index); err != nil {
			return err
		}
		if err := b.Put(segChunksKey, chunks); err != nil {
			return err
		}
		if err := b.Delete(segDataKey); err != nil {
			return err
		}
	}
	return nil
}

// layerReader reads one backup's index and seeks in it: a seek finds the
// segment by the ranges in segment_meta, the chunk by the chunk index,
// and decodes that chunk alone. Each read is its own short transaction.
type layerReader struct {
	s      *Store
	backup uint64
	total  int // segments; -1 until read
	metas  map[int]*segMeta
	seg    int               // segment of cur; -1 before the first
	chunks []fileindex.Chunk // of seg; nil when seg is stored whole
	chunk  int               // of cur, in seg
	cur    []fileindex.Entry
	i      int // next in cur
	err    error
}

func (r *layerReader) Next() (fileindex.Entry, bool) {
	for r.i >= len(r.cur) {
		if r.err != nil {
			return fileindex.Entry{}, false
		}
		switch {
		case r.seg >= 0 && r.chunk+1 < len(r.chunks):
			r.read(r.seg, r.chunk+1)
		case r.total >= 0 && r.seg+1 >= r.total:
			return fileindex.Entry{}, false
		default:
			r.read(r.seg+1, 0)
		}
		if r.err == nil && r.seg >= r.total {
			return fileindex.Entry{}, false
		}
	}
	r.i++
	return r.cur[r.i-1], true
}

func (r *layerReader) Err() error { return r.err }

func (r *layerReader) Seek(past fileindex.Past) {
	if r.err != nil {
		return
	}
	// The chunk in memory holds the place if its last entry is past it.
	if r.i < len(r.cur) && past(r.cur[len(r.cur)-1].Path) {
		r.i += sort.Search(len(r.cur)-r.i, func(k int) bool { return past(r.cur[r.i+k].Path) })
		return
	}
	if r.total < 0 {
		if r.err = r.s.view(r.readTotal); r.err != nil {
			return
		}
	}
	// The first segment from cur's on whose last entry is past the place;
	// segments' ranges ascend.
	lo := max(r.seg, 0)
	no := lo + sort.Search(r.total-lo, func(k int) bool {
		m := r.meta(lo + k)
		return m == nil || past(string(m.Last))
	})
	if r.err != nil {
		return
	}
	if no >= r.total {
		r.seg, r.chunks, r.cur, r.i = r.total, nil, nil, 0
		return
	}
	// Its last chunk that starts before the place, or its first.
	if no != r.seg {
		r.read(no, -1)
		if r.err != nil {
			return
		}
	}
	c := sort.Search(len(r.chunks), func(j int) bool { return past(r.chunks[j].First) }) - 1
	c = max(c, 0)
	if r.seg == no && r.cur != nil && c <= r.chunk {
		c = r.chunk + 1 // the chunk in memory holds nothing past it
	}
	if c >= max(len(r.chunks), 1) {
		r.cur, r.i = nil, 0 // the next segment starts past it
		r.chunk = len(r.chunks)
		return
	}
	r.read(no, c)
	r.i = sort.Search(len(r.cur), func(k int) bool { return past(r.cur[k].Path) })
}

func (r *layerReader) readTotal(tx *bbolt.Tx) error {
	var b Backup
	ok, err := getJSON(tx, bBackups, u64(r.backup), &b)
	if err != nil {
		return err
	}
	if !ok {
		return notFound("backup %d does not exist", r.backup)
	}
	r.total = b.Segments
	return nil
}

// meta is segment no's record, nil after an error.
func (r *layerReader) meta(no int) *segMeta {
	if m, ok := r.metas[no]; ok {
		return m
	}
	var m segMeta
	err := r.s.view(func(tx *bbolt.Tx) error {
		k := segKey(r.backup, no)
		return jsonUnmarshal(bSegMeta, k, tx.Bucket(bSegMeta).Get(k), &m)
	})
	if err != nil {
		r.err = err
		return nil
	}
	r.metas[no] = &m
	return &m
}

// read makes chunk c of segment no the current one, from its start; c -1
// loads only the segment's chunk index. A segment past the last ends it.
func (r *layerReader) read(no, c int) {
	r.err = r.s.view(func(tx *bbolt.Tx) error {
		if r.total < 0 {
			if err := r.readTotal(tx); err != nil {
				return err
			}
		}
		if no >= r.total {
			r.seg, r.chunks, r.cur, r.i = r.total, nil, nil, 0
			return nil
		}
		b := tx.Bucket(bSegData).Bucket(segKey(r.backup, no))
		if b == nil {
			return fmt.Errorf("index segment %d of backup %d is gone: the backup was aborted or removed while being read", no, r.backup)
		}
		whole := b.Get(segDataKey)
		if no != r.seg {
			r.seg, r.chunks, r.chunk, r.cur, r.i = no, nil, -1, nil, 0
			if whole == nil {
				chunks, err := fileindex.DecodeChunkIndex(b.Get(segIndexKey))
				if err != nil {
					return &IndexDamagedError{Backup: r.backup, Segment: no, Err: err}
				}
				r.chunks = chunks
			}
		}
		if c < 0 {
			return nil
		}
		var entries []fileindex.Entry
		var err error
		if whole != nil {
			r.s.decodes.Add(1)
			entries, err = fileindex.DecodeSegment(whole)
		} else {
			off := 0
			for _, ch := range r.chunks[:c] {
				off += ch.Len
			}
			data := b.Get(segChunksKey)
			if off+r.chunks[c].Len > len(data) {
				err = fmt.Errorf("%w: chunk %d ends past the segment's %d bytes", fileindex.ErrCorrupt, c, len(data))
			} else {
				data = data[off : off+r.chunks[c].Len]
				key := chunkKey{backup: r.backup, seg: no, chunk: c, sum: maphash.Bytes(chunkSeed, data)}
				if entries = r.s.chunks.get(key); entries == nil {
					r.s.decodes.Add(1)
					if entries, err = fileindex.DecodeChunk(data, r.chunks[c]); err == nil {
						r.s.chunks.put(key, entries)
					}
				}
			}
		}
		if err != nil {
			return &IndexDamagedError{Backup: r.backup, Segment: no, Err: err}
		}
		r.chunk, r.cur, r.i = c, entries, 0
		return nil
	})
}

// SegmentBytes returns a source of the bytes the catalog stores for each of
// a backup's index segments, in order (its chunk index and chunks, or the
// segment whole): what servers that applied the same commands hold alike.
func (s *Store) SegmentBytes(backupID uint64) fileindex.SegmentSource {
	no := 0
	return func() ([]byte, bool, error) {
		var data []byte
		err := s.view(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bSegData).Bucket(segKey(backupID, no))
			if b == nil {
				return nil
			}
			data = append(bytes.Clone(b.Get(segIndexKey)), b.Get(segChunksKey)...)
			data = append(data, b.Get(segDataKey)...)
			return nil
		})
		if err != nil || data == nil {
			return nil, false, err
		}
		no++
		return data, true, nil
	}
}

// chunkCache holds the last chunks decoded, by the hash of their bytes as
// well as their place: a backup's segments are rewritten when a job's
// attempt is requeued, and a snapshot replaces the whole catalog.
type chunkCache struct {
	mu    sync.Mutex
	byKey map[chunkKey][]fileindex.Entry
	order []chunkKey // oldest first
}

type chunkKey struct {
	backup     uint64
	seg, chunk int
	sum        uint64
}

// maxCachedChunks bounds the cache at about 4 MB of decoded entries.
const maxCachedChunks = 128

var chunkSeed = maphash.MakeSeed()

func (c *chunkCache) get(k chunkKey) []fileindex.Entry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byKey[k]
}

func (c *chunkCache) put(k chunkKey, entries []fileindex.Entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byKey == nil {
		c.byKey = map[chunkKey][]fileindex.Entry{}
	}
	if _, ok := c.byKey[k]; ok {
		return
	}
	if len(c.order) == maxCachedChunks {
		delete(c.byKey, c.order[0])
		c.order = c.order[1:]
	}
	c.byKey[k] = entries
	c.order = append(c.order, k)
}
