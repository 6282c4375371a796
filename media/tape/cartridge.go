package tape

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// An emulated cartridge is one file. It is not the volume format (that is
// what gets written onto the emulated tape); it is the emulator's own,
// built to be simple, to survive a crash at any point, and to hold a few
// GiB without being read into memory:
//
//	offset 0     meta slot A (4 KiB)
//	offset 4096  meta slot B (4 KiB)
//	offset 8192  the tape: objects, one after another, then end of data
//
// A meta slot is "CRNTAPE1", a sequence number (u64), the length (u32)
// and CRC-32C (u32) of a JSON document (barcode, capacity, early warning
// zone, write protection, cartridge memory), then the JSON. Updates go to
// the slot not holding the newest valid copy, so a torn update leaves the
// previous one; the newest valid slot wins on reading.
//
// An object is a 16-byte header: kind (1 record, 2 file mark), three zero
// bytes, data length (u32), CRC-32C of the data (u32), CRC-32C of the
// first 12 header bytes (u32); then the data (none for a file mark).
// Opening a cartridge walks the headers (reading 16 bytes per object,
// never the data). The data's CRC is checked on every read, so damage to
// the file surfaces as a medium error at that block, as a real drive's ECC
// would.
//
// Opening never changes the tape part of the file: the emulator does not
// destroy data on load. A header that does not check out is damage: the
// walk searches on for the next valid header, and what lies between is
// one block that reads as a medium error. After the last valid object,
// what a crash mid-write leaves (part of a header, a header whose data
// runs past the end of the file, or zeros) is not part of the tape: end of
// data is before it, and the next write at end of data replaces it, as a
// write on tape ends the data where it happens. Anything else there is a
// damaged block, with end of data after it.
//
// The walk keeps the offset of every 256th object and the block number of
// every file mark in memory: a few KiB for a few GiB of 256 KiB records,
// and locating a block reads at most 255 headers. All integers are
// big-endian.
const (
	cartMagic  = "CRNTAPE1"
	slotSize   = 4096
	slotHeader = 24
	logStart   = 2 * slotSize
	objHeader  = 16
	objRecord  = 1
	objMark    = 2
	// objDamaged is no kind on disk: the block whose header is damaged.
	objDamaged   = 0xff
	ckptEvery    = 256
	maxRecordLen = 16 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// CartridgeSpec describes a new emulated cartridge.
type CartridgeSpec struct {
	Barcode string
	// Capacity is the native capacity in bytes: the physical end of the
	// tape.
	Capacity int64
	// EarlyWarningZone is how many bytes before the physical end the drive
	// reports early warning; 0 means 1/1000 of Capacity, at least 1 MiB.
	EarlyWarningZone int64
	WriteProtected   bool
}

// LTO9Cartridge is an 18 TB (native) LTO-9 data cartridge.
func LTO9Cartridge(barcode string) CartridgeSpec {
	return CartridgeSpec{Barcode: barcode, Capacity: 18_000_000_000_000}
}

func (s CartridgeSpec) zone() int64 {
	if s.EarlyWarningZone > 0 {
		return s.EarlyWarningZone
	}
	return max(s.Capacity/1000, 1<<20)
}

// CartridgeInfo is what a cartridge file says about itself: the label on
// its case and its cartridge memory.
type CartridgeInfo struct {
	Barcode          string    `json:"barcode"`
	Capacity         int64     `json:"capacity"`
	EarlyWarningZone int64     `json:"early_warning_zone"`
	WriteProtected   bool      `json:"write_protected"`
	Created          time.Time `json:"created"`
	VolumeID         uuid.UUID `json:"volume_id"`
	LoadCount        int64     `json:"load_count"`
	BytesWritten     int64     `json:"bytes_written"`
	BytesRead        int64     `json:"bytes_read"`
}

// CreateCartridge makes a new blank cartridge file at path. It never
// overwrites a file.
func CreateCartridge(path string, spec CartridgeSpec) error {
	if spec.Capacity <= 0 {
		return fmt.Errorf("create cartridge %s: capacity %d must be positive", path, spec.Capacity)
	}
	if spec.zone() >= spec.Capacity {
		return fmt.Errorf("create cartridge %s: early warning zone %d is not below the capacity %d", path, spec.zone(), spec.Capacity)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return fmt.Errorf("create cartridge: %w", err)
	}
	c := &cartridge{path: path, f: f, eodOff: logStart, info: CartridgeInfo{
		Barcode: spec.Barcode, Capacity: spec.Capacity, EarlyWarningZone: spec.zone(),
		WriteProtected: spec.WriteProtected, Created: time.Now().UTC(),
	}}
	err = c.writeMeta()
	if err == nil {
		err = f.Truncate(logStart)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("create cartridge %s: %w", path, err)
	}
	return nil
}

// ReadCartridgeInfo reads a cartridge file's label and memory without
// loading it (what a library's inventory does).
func ReadCartridgeInfo(path string) (CartridgeInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return CartridgeInfo{}, fmt.Errorf("cartridge: %w", err)
	}
	defer f.Close()
	info, _, err := readMeta(f, path)
	return info, err
}

// SetWriteProtect moves the write-protect tab of a cartridge that is in no
// drive.
func SetWriteProtect(path string, on bool) error {
	c, err := openCartridge(path)
	if err != nil {
		return err
	}
	defer c.close()
	c.info.WriteProtected = on
	return c.writeMeta()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// cartridge is an open cartridge file. Not safe for concurrent use: the
// drive that loaded it serialises access.
type cartridge struct {
	path    string
	f       *os.File
	info    CartridgeInfo
	metaSeq uint64

	eod    int64   // number of objects: the block number of end of data
	eodOff int64   // file offset of end of data
	ckpt   []int64 // ckpt[k]: file offset of object k*ckptEvery; len = ceil(eod/ckptEvery)
	marks  []int64 // block numbers of the file marks, ascending
	// A cursor makes sequential access O(1): the offset of object curLBA.
	curLBA, curOff int64
	// damaged maps the file offset of an object whose header is damaged
	// to the offset of the next valid one.
	damaged map[int64]int64
	// tail is the number of bytes past end of data that a crash left: not
	// part of the tape, left in the file until the next write.
	tail int64

	hdr [objHeader]byte
	buf []byte
}

// errCartridgeInUse: the file is locked by another drive (or process).
var errCartridgeInUse = errors.New("cartridge is loaded in another drive")

func openCartridge(path string) (*cartridge, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("cartridge %s: %w", path, err)
		}
		return nil, fmt.Errorf("open cartridge: %w", err)
	}
	// One drive at a time, as with a physical cartridge.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("cartridge %s: %w: %w", path, errCartridgeInUse, ErrBusy)
		}
		return nil, fmt.Errorf("lock cartridge %s: %w", path, err)
	}
	c := &cartridge{path: path, f: f}
	if c.info, c.metaSeq, err = readMeta(f, path); err != nil {
		f.Close()
		return nil, err
	}
	if err := c.scan(); err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

func (c *cartridge) close() error {
	err := c.f.Sync()
	if cerr := c.f.Close(); err == nil {
		err = cerr
	}
	return err
}

func readMeta(f *os.File, path string) (CartridgeInfo, uint64, error) {
	var best CartridgeInfo
	var bestSeq uint64
	found := false
	buf := make([]byte, slotSize)
	for slot := range 2 {
		if _, err := f.ReadAt(buf, int64(slot*slotSize)); err != nil && !errors.Is(err, io.EOF) {
			return best, 0, fmt.Errorf("cartridge %s: read meta slot %d: %w", path, slot, err)
		}
		if string(buf[:8]) != cartMagic {
			continue
		}
		seq := binary.BigEndian.Uint64(buf[8:16])
		n := binary.BigEndian.Uint32(buf[16:20])
		if n > slotSize-slotHeader {
			continue
		}
		js := buf[slotHeader : slotHeader+n]
		if crc32.Checksum(js, castagnoli) != binary.BigEndian.Uint32(buf[20:24]) {
			continue
		}
		var info CartridgeInfo
		if json.Unmarshal(js, &info) != nil {
			continue
		}
		if !found || seq > bestSeq {
			best, bestSeq, found = info, seq, true
		}
	}
	if !found {
		return best, 0, fmt.Errorf("cartridge %s: not an emulated cartridge file (no valid meta slot)", path)
	}
	return best, bestSeq, nil
}

// writeMeta writes the cartridge's meta to the older slot and syncs.
func (c *cartridge) writeMeta() error {
	js, err := json.Marshal(c.info)
	if err != nil {
		return err
	}
	if len(js) > slotSize-slotHeader {
		return fmt.Errorf("cartridge %s: meta of %d bytes does not fit its slot", c.path, len(js))
	}
	seq := c.metaSeq + 1
	buf := make([]byte, slotSize)
	copy(buf, cartMagic)
	binary.BigEndian.PutUint64(buf[8:16], seq)
	binary.BigEndian.PutUint32(buf[16:20], uint32(len(js)))
	binary.BigEndian.PutUint32(buf[20:24], crc32.Checksum(js, castagnoli))
	copy(buf[slotHeader:], js)
	if _, err := c.f.WriteAt(buf, int64(seq%2)*slotSize); err != nil {
		return fmt.Errorf("cartridge %s: write meta: %w", c.path, err)
	}
	if err := c.f.Sync(); err != nil {
		return fmt.Errorf("cartridge %s: sync meta: %w", c.path, err)
	}
	c.metaSeq = seq
	return nil
}

// header decodes the object header at off; ok is false if none is there.
func (c *cartridge) header(off, size int64) (kind byte, n uint32, crc uint32, ok bool, err error) {
	if off+objHeader > size {
		return 0, 0, 0, false, nil
	}
	h := c.hdr[:]
	if _, err := c.f.ReadAt(h, off); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, 0, 0, false, nil
		}
		return 0, 0, 0, false, fmt.Errorf("cartridge %s: read at %d: %w", c.path, off, err)
	}
	kind = h[0]
	n = binary.BigEndian.Uint32(h[4:8])
	crc = binary.BigEndian.Uint32(h[8:12])
	switch {
	case h[1] != 0 || h[2] != 0 || h[3] != 0,
		crc32.Checksum(h[:12], castagnoli) != binary.BigEndian.Uint32(h[12:16]),
		kind != objRecord && kind != objMark,
		kind == objMark && n != 0,
		n > maxRecordLen,
		off+objHeader+int64(n) > size:
		return 0, 0, 0, false, nil
	}
	return kind, n, crc, true, nil
}

// object returns the object at file offset off (before limit): a
// damaged one comes back as objDamaged, spanning up to the next valid
// object.
func (c *cartridge) objectAt(off, limit int64) (kind byte, n uint32, crc uint32, ok bool, err error) {
	if end, bad := c.damaged[off]; bad && end <= limit {
		return objDamaged, uint32(end - off - objHeader), 0, true, nil
	}
	return c.header(off, limit)
}

// scan walks the object headers to find end of data, the checkpoints, the
// file marks and the damaged objects. It only reads.
func (c *cartridge) scan() error {
	st, err := c.f.Stat()
	if err != nil {
		return fmt.Errorf("cartridge %s: %w", c.path, err)
	}
	size := st.Size()
	off, lba := int64(logStart), int64(0)
	for off < size {
		kind, n, _, ok, err := c.header(off, size)
		if err != nil {
			return err
		}
		next := off + objHeader + int64(n)
		if !ok {
			var found bool
			if next, found, err = c.nextHeader(off+1, size); err != nil {
				return err
			}
			if !found {
				torn, err := c.tornTail(off, size)
				if err != nil {
					return err
				}
				if torn {
					break
				}
				next = size // damage up to the end of the file
			}
			if next-off < objHeader {
				// Too short to be an object: the valid header found
				// inside this one's 16 bytes is a chance match.
				next = off + objHeader
			}
			if c.damaged == nil {
				c.damaged = map[int64]int64{}
			}
			c.damaged[off] = next
			kind = objDamaged
		}
		if lba%ckptEvery == 0 {
			c.ckpt = append(c.ckpt, off)
		}
		if kind == objMark {
			c.marks = append(c.marks, lba)
		}
		off = next
		lba++
	}
	c.eod, c.eodOff = lba, min(off, size)
	c.tail = size - c.eodOff
	c.curLBA, c.curOff = 0, logStart
	return nil
}

// nextHeader searches [from, size) for the next valid object header.
func (c *cartridge) nextHeader(from, size int64) (int64, bool, error) {
	const chunk = 1 << 20
	buf := make([]byte, chunk+objHeader)
	for base := from; base+objHeader <= size; base += chunk {
		n, err := c.f.ReadAt(buf[:min(int64(len(buf)), size-base)], base)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, false, fmt.Errorf("cartridge %s: read at %d: %w", c.path, base, err)
		}
		b := buf[:n]
		for i := 0; i < chunk && i+objHeader <= len(b); i++ {
			if (b[i] != objRecord && b[i] != objMark) || b[i+1] != 0 || b[i+2] != 0 || b[i+3] != 0 {
				continue
			}
			if _, _, _, ok, err := c.header(base+int64(i), size); err != nil {
				return 0, false, err
			} else if ok {
				return base + int64(i), true, nil
			}
		}
	}
	return 0, false, nil
}

// tornTail tells whether what follows the last valid object, at off, is
// what a crash in the middle of appending an object leaves: the start of
// its header, its header with only part of its data, or zeros where the
// file grew and the data never landed.
func (c *cartridge) tornTail(off, size int64) (bool, error) {
	if size-off < objHeader {
		return true, nil
	}
	h := make([]byte, objHeader)
	if _, err := c.f.ReadAt(h, off); err != nil {
		return false, fmt.Errorf("cartridge %s: read at %d: %w", c.path, off, err)
	}
	if !slices.ContainsFunc(h, func(b byte) bool { return b != 0 }) {
		return true, nil
	}
	n := binary.BigEndian.Uint32(h[4:8])
	return crc32.Checksum(h[:12], castagnoli) == binary.BigEndian.Uint32(h[12:16]) && h[0] == objRecord && n <= maxRecordLen && off+objHeader+int64(n) > size, nil
}

// offset returns the file offset of object lba (0 <= lba <= eod).
func (c *cartridge) offset(lba int64) (int64, error) {
	if lba == c.eod {
		return c.eodOff, nil
	}
	k := lba / ckptEvery
	from, off := k*ckptEvery, c.ckpt[k]
	if c.curLBA <= lba && c.curLBA > from {
		from, off = c.curLBA, c.curOff
	}
	for ; from < lba; from++ {
		_, n, _, ok, err := c.objectAt(off, c.eodOff)
		if err != nil {
			return 0, err
		}
		if !ok {
			return 0, fmt.Errorf("cartridge %s: object %d at offset %d is unreadable", c.path, from, off)
		}
		off += objHeader + int64(n)
	}
	c.curLBA, c.curOff = lba, off
	return off, nil
}

// bytesBefore is how many data bytes lie before object lba: its distance
// from the beginning of the tape, for capacity and timing.
func (c *cartridge) bytesBefore(lba int64) (int64, error) {
	off, err := c.offset(lba)
	return off - logStart - objHeader*lba, err
}

// object describes object lba (< eod).
func (c *cartridge) object(lba int64) (kind byte, n int, off int64, crc uint32, err error) {
	off, err = c.offset(lba)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	kind, m, crc, ok, err := c.objectAt(off, c.eodOff)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	if !ok {
		return 0, 0, 0, 0, fmt.Errorf("cartridge %s: object %d at offset %d is unreadable", c.path, lba, off)
	}
	return kind, int(m), off, crc, nil
}

// readData reads the n data bytes of the object at off into p and checks
// them; false means they do not match their CRC.
func (c *cartridge) readData(p []byte, off int64, crc uint32) (bool, error) {
	if _, err := c.f.ReadAt(p, off+objHeader); err != nil {
		return false, fmt.Errorf("cartridge %s: read at %d: %w", c.path, off+objHeader, err)
	}
	return crc32.Checksum(p, castagnoli) == crc, nil
}

// truncate makes lba the end of data.
func (c *cartridge) truncate(lba int64) error {
	if lba >= c.eod {
		return nil
	}
	off, err := c.offset(lba)
	if err != nil {
		return err
	}
	if err := c.f.Truncate(off); err != nil {
		return fmt.Errorf("cartridge %s: truncate: %w", c.path, err)
	}
	for at := range c.damaged {
		if at >= off {
			delete(c.damaged, at)
		}
	}
	c.eod, c.eodOff, c.tail = lba, off, 0
	c.ckpt = c.ckpt[:(lba+ckptEvery-1)/ckptEvery]
	c.marks = c.marks[:sort.Search(len(c.marks), func(i int) bool { return c.marks[i] >= lba })]
	c.curLBA, c.curOff = lba, off
	return nil
}

// add appends an object at end of data.
func (c *cartridge) add(kind byte, data []byte) error {
	if c.tail > 0 {
		// A crash's leftovers past end of data: this write ends the data
		// here.
		if err := c.f.Truncate(c.eodOff); err != nil {
			return fmt.Errorf("cartridge %s: write: %w", c.path, err)
		}
		c.tail = 0
	}
	need := objHeader + len(data)
	if cap(c.buf) < need {
		c.buf = make([]byte, need)
	}
	b := c.buf[:need]
	b[0], b[1], b[2], b[3] = kind, 0, 0, 0
	binary.BigEndian.PutUint32(b[4:8], uint32(len(data)))
	binary.BigEndian.PutUint32(b[8:12], crc32.Checksum(data, castagnoli))
	binary.BigEndian.PutUint32(b[12:16], crc32.Checksum(b[:12], castagnoli))
	copy(b[objHeader:], data)
	if _, err := c.f.WriteAt(b, c.eodOff); err != nil {
		// Leave the file as it was: a partial object would be cut off at
		// the next open anyway, but later appends must not follow it.
		c.f.Truncate(c.eodOff)
		return fmt.Errorf("cartridge %s: write: %w", c.path, err)
	}
	if c.eod%ckptEvery == 0 {
		c.ckpt = append(c.ckpt, c.eodOff)
	}
	if kind == objMark {
		c.marks = append(c.marks, c.eod)
	}
	c.eod++
	c.eodOff += int64(need)
	c.curLBA, c.curOff = c.eod, c.eodOff
	return nil
}

func (c *cartridge) sync() error {
	if err := c.f.Sync(); err != nil {
		return fmt.Errorf("cartridge %s: sync: %w", c.path, err)
	}
	return nil
}

// marksBefore is the number of file marks before lba, and the block of the
// last of them (-1 if none).
func (c *cartridge) marksBefore(lba int64) (int64, int64) {
	i := sort.Search(len(c.marks), func(i int) bool { return c.marks[i] >= lba })
	if i == 0 {
		return 0, -1
	}
	return int64(i), c.marks[i-1]
}

// position describes lba in file and record terms.
func (c *cartridge) position(lba int64) Position {
	file, last := c.marksBefore(lba)
	return Position{Block: lba, File: file, Record: lba - last - 1}
}
