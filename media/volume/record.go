package volume

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/internal/varint"
)

// RecordType tags a record of a session's data stream. The agent sends these
// records over the data port and the storage node packs them, unchanged,
// into blocks, so the stream and the volume share one encoding.
type RecordType uint8

const (
	// RecFileHeader opens an entry: its body is a fileindex entry encoding
	// without location and hash. Every entry, of every type, is a
	// FileHeader, its Data records, and a FileEnd.
	RecFileHeader RecordType = 1
	// RecData carries a run of the file's content at an offset; holes of
	// sparse files are simply not sent.
	RecData RecordType = 2
	// RecFileEnd closes the entry opened by the last FileHeader. For a
	// large file sent by blocks (formats 3 and 4) it carries the file's block
	// list after its digest.
	RecFileEnd RecordType = 3
	// RecBlockStart is never on a volume and never in a backup stream: a
	// restore stream gives it before the Data records of one block of a
	// large file that a restore reads where the block lies, in the session
	// of an earlier version (fileindex.Location.Len). From
	// SessionReader.ReadEntries its body is the block's index in the
	// locations asked for (BlockIndex); in the stream a storage node sends
	// an agent, where the block goes (BlockStart).
	RecBlockStart RecordType = 4
)

func (t RecordType) String() string {
	switch t {
	case RecFileHeader:
		return "FileHeader"
	case RecData:
		return "Data"
	case RecFileEnd:
		return "FileEnd"
	case RecBlockStart:
		return "BlockStart"
	}
	return fmt.Sprintf("record(%d)", uint8(t))
}

const (
	// MaxHeaderBody bounds a FileHeader record; a block always has room
	// for a whole one, so headers never span blocks.
	MaxHeaderBody = 256 << 10
	// MaxDataBody bounds the content a single Data record carries.
	MaxDataBody = 256 << 10
	// maxRecordOverhead is the tag plus the longest length and offset varints.
	maxRecordOverhead = 1 + 2*binary.MaxVarintLen64
)

// FileEnd status values.
const (
	// EndOK: every byte of the file was read; Hash is its SHA-256.
	EndOK uint8 = 0
	// EndReadError: the agent could not read the whole file (it changed
	// size or an I/O error occurred); the content is incomplete.
	EndReadError uint8 = 1
)

// ErrShortRecord means the buffer ends inside a record.
var ErrShortRecord = errors.New("record continues past the end of the buffer")

// ErrBadRecord is wrapped by every malformed-record error.
var ErrBadRecord = errors.New("malformed record")

// AppendRecord appends one record to dst.
func AppendRecord(dst []byte, t RecordType, body []byte) []byte {
	return append(AppendRecordHeader(dst, t, len(body)), body...)
}

// AppendRecordHeader appends what precedes a record's body of n bytes, for
// a writer that sends the body from where it lies.
func AppendRecordHeader(dst []byte, t RecordType, n int) []byte {
	dst = append(dst, byte(t))
	return binary.AppendUvarint(dst, uint64(n))
}

// AppendDataRecord appends a Data record for data at offset in the file.
func AppendDataRecord(dst []byte, offset int64, data []byte) []byte {
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(offset))
	dst = append(dst, byte(RecData))
	dst = binary.AppendUvarint(dst, uint64(n+len(data)))
	dst = append(dst, hdr[:n]...)
	return append(dst, data...)
}

// MaxDataHeader is the most bytes the head of a Data record takes: its
// type, its length and its offset.
const MaxDataHeader = 1 + 2*binary.MaxVarintLen64

// PutDataHeader writes the head of a Data record carrying n bytes at
// offset into b, which holds at least MaxDataHeader bytes, and returns its
// length: with the n bytes after it, the record AppendDataRecord makes. A
// reader that reads file data straight in after the head needs no copy.
func PutDataHeader(b []byte, offset int64, n int) int {
	b[0] = byte(RecData)
	k := 1 + binary.PutUvarint(b[1:], uint64(uvarintLen(uint64(offset))+n))
	return k + binary.PutUvarint(b[k:], uint64(offset))
}

// AppendFileEnd appends a FileEnd record.
func AppendFileEnd(dst []byte, status uint8, hash []byte) []byte {
	dst = append(dst, byte(RecFileEnd))
	dst = binary.AppendUvarint(dst, uint64(1+len(hash)))
	dst = append(dst, status)
	return append(dst, hash...)
}

// AppendFileEndBlocks appends the FileEnd record of a large file sent by
// blocks: its status, its digest (32 bytes) and its block list.
func AppendFileEndBlocks(dst []byte, status uint8, hash []byte, bl *fileindex.BlockList) []byte {
	list := fileindex.AppendBlockList(nil, bl)
	dst = append(dst, byte(RecFileEnd))
	dst = binary.AppendUvarint(dst, uint64(1+len(hash)+len(list)))
	dst = append(dst, status)
	dst = append(dst, hash...)
	return append(dst, list...)
}

// ParseRecord reads the record at the start of b and returns its type, body
// (aliasing b) and encoded length. It returns ErrShortRecord when b ends
// inside the record.
func ParseRecord(b []byte) (t RecordType, body []byte, n int, err error) {
	if len(b) == 0 {
		return 0, nil, 0, ErrShortRecord
	}
	t = RecordType(b[0])
	if t < RecFileHeader || t > RecFileEnd {
		return 0, nil, 0, fmt.Errorf("%w: unknown record type %d", ErrBadRecord, b[0])
	}
	l, m := varint.Uvarint(b[1:])
	if m == 0 {
		return 0, nil, 0, ErrShortRecord
	}
	if m < 0 || l > MaxHeaderBody+binary.MaxVarintLen64 {
		return 0, nil, 0, fmt.Errorf("%w: %s record length out of range", ErrBadRecord, t)
	}
	end := 1 + m + int(l)
	if end > len(b) {
		return 0, nil, 0, ErrShortRecord
	}
	return t, b[1+m : end], end, nil
}

// DecodeData splits a Data record body into its file offset and content.
func DecodeData(body []byte) (offset int64, data []byte, err error) {
	off, n := varint.Uvarint(body)
	if n <= 0 || off > 1<<62 {
		return 0, nil, fmt.Errorf("%w: bad data offset", ErrBadRecord)
	}
	return int64(off), body[n:], nil
}

// DecodeFileEnd splits a FileEnd record body into its status, hash and,
// for a file sent by blocks, its block list (nil otherwise).
func DecodeFileEnd(body []byte) (status uint8, hash []byte, blocks *fileindex.BlockList, err error) {
	if len(body) == 0 {
		return 0, nil, nil, fmt.Errorf("%w: empty FileEnd", ErrBadRecord)
	}
	if len(body) <= 1+sha256.Size {
		return body[0], body[1:], nil, nil
	}
	bl, err := fileindex.DecodeBlockList(body[1+sha256.Size:])
	if err != nil {
		return 0, nil, nil, fmt.Errorf("%w: FileEnd: %w", ErrBadRecord, err)
	}
	return body[0], body[1 : 1+sha256.Size], bl, nil
}

// BlockStart is the body of a RecBlockStart record: the path of the file
// the block belongs to, its length, and the offsets in that file where its
// bytes go (more than one when the file holds the same block twice).
type BlockStart struct {
	Path string
	Len  uint64
	At   []int64
}

// AppendBlockStart appends a RecBlockStart record.
func AppendBlockStart(dst []byte, b *BlockStart) []byte {
	return AppendRecord(dst, RecBlockStart, AppendBlockStartBody(nil, b))
}

// AppendBlockStartBody appends the body of a RecBlockStart record.
func AppendBlockStartBody(dst []byte, b *BlockStart) []byte {
	dst = binary.AppendUvarint(dst, b.Len)
	dst = binary.AppendUvarint(dst, uint64(len(b.At)))
	for _, at := range b.At {
		dst = binary.AppendUvarint(dst, uint64(at))
	}
	return append(dst, b.Path...)
}

// DecodeBlockStart decodes the body of a RecBlockStart record.
func DecodeBlockStart(body []byte) (BlockStart, error) {
	var b BlockStart
	bad := fmt.Errorf("%w: malformed BlockStart", ErrBadRecord)
	l, n := varint.Uvarint(body)
	if n <= 0 || l == 0 || l > 1<<62 {
		return b, bad
	}
	body = body[n:]
	c, n := varint.Uvarint(body)
	if n <= 0 || c == 0 || c > uint64(len(body)) {
		return b, bad
	}
	body = body[n:]
	b.Len, b.At = l, make([]int64, c)
	for i := range b.At {
		at, n := varint.Uvarint(body)
		if n <= 0 || at > 1<<62-l {
			return b, bad
		}
		b.At[i] = int64(at)
		body = body[n:]
	}
	if len(body) == 0 {
		return b, bad
	}
	b.Path = string(body)
	return b, nil
}

// ParseRestoreRecord is ParseRecord for a restore stream, which may also
// carry RecBlockStart records.
func ParseRestoreRecord(b []byte) (t RecordType, body []byte, n int, err error) {
	if len(b) == 0 || RecordType(b[0]) != RecBlockStart {
		return ParseRecord(b)
	}
	l, m := varint.Uvarint(b[1:])
	switch {
	case m == 0:
		return 0, nil, 0, ErrShortRecord
	case m < 0 || l > MaxHeaderBody:
		return 0, nil, 0, fmt.Errorf("%w: BlockStart record length out of range", ErrBadRecord)
	case 1+m+int(l) > len(b):
		return 0, nil, 0, ErrShortRecord
	}
	return RecBlockStart, b[1+m : 1+m+int(l)], 1 + m + int(l), nil
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// dataRecordLen is the encoded size of a Data record carrying n bytes at offset.
func dataRecordLen(offset int64, n int) int {
	body := uvarintLen(uint64(offset)) + n
	return 1 + uvarintLen(uint64(body)) + body
}

// dataFit is how many content bytes at offset a Data record may carry to
// fit in room bytes (possibly one less than the most, never more).
func dataFit(offset int64, room int) int {
	return room - 1 - uvarintLen(uint64(room)) - uvarintLen(uint64(offset))
}
