package fileindex

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/cairnbackup/cairn/internal/varint"
)

// Type is the kind of filesystem object an Entry describes.
type Type uint8

const (
	TypeFile    Type = 1
	TypeDir     Type = 2
	TypeSymlink Type = 3
	// TypeHardlink is a further name of a regular file whose first name, in
	// index order, is Target within the same backup. It carries no content:
	// a restore links it to Target.
	TypeHardlink Type = 4
	TypeFifo     Type = 5
	TypeCharDev  Type = 6
	TypeBlockDev Type = 7
	// TypeDeleted is a tombstone: the path existed in the base of an
	// incremental or differential backup and no longer does.
	TypeDeleted Type = 8
)

var typeNames = map[Type]string{
	TypeFile: "file", TypeDir: "dir", TypeSymlink: "symlink", TypeHardlink: "hardlink",
	TypeFifo: "fifo", TypeCharDev: "chardev", TypeBlockDev: "blockdev", TypeDeleted: "deleted",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// HasContent reports whether entries of this type carry data records.
func (t Type) HasContent() bool { return t == TypeFile }

// Xattr is one extended attribute. POSIX ACLs travel as the
// system.posix_acl_access and system.posix_acl_default attributes.
type Xattr struct {
	Name  string `json:"name"`
	Value []byte `json:"value"`
}

// Location says where an entry's records lie inside its session's stream.
// It is medium-independent: Off counts bytes from the start of the session's
// first data block, across all the volumes the session spans, so the
// session's part table (catalog or volume) maps it to a volume and a byte or
// tape position.
type Location struct {
	// Seq is the block that holds the entry's FileHeader record.
	Seq uint64 `json:"seq"`
	// Off is that block's offset in the session stream.
	Off uint64 `json:"off"`
	// InBlock is the FileHeader record's offset in the block's plaintext.
	InBlock uint32 `json:"in_block"`
	// EndSeq is the block that holds the entry's FileEnd record; a damaged
	// block between Seq and EndSeq damages this entry.
	EndSeq uint64 `json:"end_seq"`
	// Len is set on the location of a block of a large file's content
	// (Block.Loc) only: the bytes of content to read from the Data record
	// at Seq and InBlock on, where an entry is read from its FileHeader to
	// its FileEnd.
	Len uint64 `json:"len,omitempty"`
}

// Entry is one version of one path.
type Entry struct {
	Path   string  `json:"path"`
	Type   Type    `json:"type"`
	Mode   uint32  `json:"mode"` // permission bits and setuid, setgid, sticky (07777)
	UID    uint32  `json:"uid"`
	GID    uint32  `json:"gid"`
	User   string  `json:"user,omitempty"`
	Group  string  `json:"group,omitempty"`
	Size   int64   `json:"size"`
	MTime  int64   `json:"mtime"` // Unix nanoseconds
	ATime  int64   `json:"atime"`
	CTime  int64   `json:"ctime"`
	Dev    uint64  `json:"dev,omitempty"`
	Inode  uint64  `json:"inode,omitempty"`
	NLink  uint32  `json:"nlink,omitempty"`
	Rdev   uint64  `json:"rdev,omitempty"`
	Target string  `json:"target,omitempty"` // symlink target, or a hard link's first name
	Xattrs []Xattr `json:"xattrs,omitempty"`
	// Hash is the digest of the content that HashKind names, set from the
	// FileEnd record.
	Hash []byte `json:"hash,omitempty"`
	// HashKind says what Hash is a digest of; the zero value, the SHA-256
	// of the whole content, is what every entry written before there were
	// kinds holds.
	HashKind HashKind `json:"hash_kind,omitempty"`
	// Flags are the inode flags of chattr(1) that a restore can set again
	// (FlagsKept of what FS_IOC_GETFLAGS gave), for regular files and
	// directories.
	Flags uint32 `json:"flags,omitempty"`
	// Blocks is the block list of a large regular file (chunk.Threshold
	// and up) sent by blocks; nil for every other entry, whose content
	// lies whole between its FileHeader and its FileEnd.
	Blocks *BlockList `json:"blocks,omitempty"`
	Loc    Location   `json:"loc"`
}

// HashKind says what an entry's Hash is the digest of.
type HashKind uint8

const (
	// HashSHA256 is the SHA-256 of the content, holes read as the zeros
	// they read as.
	HashSHA256 HashKind = 0
	// HashSparseSHA256 is for files with holes: the SHA-256 over the data
	// regions and the map of where they lie (media/volume/FORMAT.md,
	// section 8), so that neither the backup nor the restore of a 6 GiB
	// file holding 1 MiB of data hashes 6 GiB of zeros.
	HashSparseSHA256 HashKind = 1
)

func (k HashKind) String() string {
	switch k {
	case HashSHA256:
		return "sha256"
	case HashSparseSHA256:
		return "sparse-sha256"
	}
	return fmt.Sprintf("hash-kind(%d)", uint8(k))
}

// Inode flags, with the bit values of Linux's FS_IOC_GETFLAGS and the
// letters chattr(1) gives them. They are part of the on-media format.
const (
	FlagSecureDelete uint32 = 0x00000001 // s
	FlagUndelete     uint32 = 0x00000002 // u
	FlagCompress     uint32 = 0x00000004 // c
	FlagSync         uint32 = 0x00000008 // S
	FlagImmutable    uint32 = 0x00000010 // i
	FlagAppend       uint32 = 0x00000020 // a
	FlagNodump       uint32 = 0x00000040 // d
	FlagNoatime      uint32 = 0x00000080 // A
	FlagNoCompress   uint32 = 0x00000400 // m
	FlagJournalData  uint32 = 0x00004000 // j
	FlagNotail       uint32 = 0x00008000 // t
	FlagDirsync      uint32 = 0x00010000 // D
	FlagTopdir       uint32 = 0x00020000 // T
	FlagNoCOW        uint32 = 0x00800000 // C
	FlagDAX          uint32 = 0x02000000 // x
	FlagProjInherit  uint32 = 0x20000000 // P
)

// FlagsKept are the inode flags a backup keeps: those chattr(1) sets. The
// others FS_IOC_GETFLAGS reports are the filesystem's own bookkeeping
// (extents, inline data, an indexed directory, encryption, verity), which
// no restore can set, or casefolding, which only an empty directory takes.
const FlagsKept = FlagSecureDelete | FlagUndelete | FlagCompress | FlagSync | FlagImmutable | FlagAppend |
	FlagNodump | FlagNoatime | FlagNoCompress | FlagJournalData | FlagNotail | FlagDirsync | FlagTopdir |
	FlagNoCOW | FlagDAX | FlagProjInherit

var flagLetters = []struct {
	bit    uint32
	letter byte
}{
	{FlagSecureDelete, 's'}, {FlagUndelete, 'u'}, {FlagSync, 'S'}, {FlagDirsync, 'D'}, {FlagImmutable, 'i'},
	{FlagAppend, 'a'}, {FlagNodump, 'd'}, {FlagNoatime, 'A'}, {FlagCompress, 'c'}, {FlagNoCOW, 'C'},
	{FlagJournalData, 'j'}, {FlagNotail, 't'}, {FlagTopdir, 'T'}, {FlagNoCompress, 'm'}, {FlagDAX, 'x'},
	{FlagProjInherit, 'P'},
}

// FlagString writes flags as lsattr(1) does ("----i-d---"), with only the
// letters of flags that are set, in lsattr's order: "id" for immutable and
// nodump; "" for none.
func FlagString(flags uint32) string {
	var b []byte
	for _, f := range flagLetters {
		if flags&f.bit != 0 {
			b = append(b, f.letter)
		}
	}
	return string(b)
}

// Compare orders paths in index order: component by component, so that a
// directory's descendants follow it contiguously. It returns -1, 0 or +1.
func Compare(a, b string) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if ca == '/' {
			return -1
		}
		if cb == '/' {
			return 1
		}
		if ca < cb {
			return -1
		}
		return 1
	}
	switch {
	case len(a) < len(b):
		return -1
	case len(a) > len(b):
		return 1
	}
	return 0
}

// Within reports whether path is root or lies below it.
func Within(path, root string) bool {
	if root == "/" || root == "" {
		return true
	}
	root = strings.TrimSuffix(root, "/")
	return path == root || strings.HasPrefix(path, root+"/")
}

// Field tags of the entry encoding. They are part of the on-media format:
// never renumber one, only add new ones.
const (
	tagPath    = 1
	tagType    = 2
	tagMode    = 3
	tagUID     = 4
	tagGID     = 5
	tagUser    = 6
	tagGroup   = 7
	tagSize    = 8
	tagMTime   = 9
	tagATime   = 10
	tagCTime   = 11
	tagDev     = 12
	tagInode   = 13
	tagNLink   = 14
	tagRdev    = 15
	tagTarget  = 16
	tagXattr   = 17 // repeated: name length, name, value
	tagHash    = 18
	tagSeq     = 19
	tagOff     = 20
	tagInBlock = 21
	tagEndSeq  = 22
	// Added after the first release; decoders that predate them skip them.
	tagFlags    = 23
	tagHashKind = 24
	// Version 3 of the volume format: a large file's block list.
	tagBlocks = 25
)

// ErrCorrupt is wrapped by every decoding error.
var ErrCorrupt = errors.New("corrupt file index data")

func appendVarField(dst []byte, tag uint64, v uint64) []byte {
	dst = binary.AppendUvarint(dst, tag)
	var tmp [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(tmp[:], v)
	dst = binary.AppendUvarint(dst, uint64(n))
	return append(dst, tmp[:n]...)
}

func appendSignedField(dst []byte, tag uint64, v int64) []byte {
	return appendVarField(dst, tag, uint64(v<<1)^uint64(v>>63))
}

func appendBytesField(dst []byte, tag uint64, b []byte) []byte {
	dst = binary.AppendUvarint(dst, tag)
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

// AppendEntry appends the binary encoding of e to dst: a sequence of
// (tag, length, value) fields, zero values omitted. Path and Type come first.
func AppendEntry(dst []byte, e *Entry) []byte {
	dst = appendBytesField(dst, tagPath, []byte(e.Path))
	dst = appendVarField(dst, tagType, uint64(e.Type))
	num := func(tag uint64, v uint64) {
		if v != 0 {
			dst = appendVarField(dst, tag, v)
		}
	}
	signed := func(tag uint64, v int64) {
		if v != 0 {
			dst = appendSignedField(dst, tag, v)
		}
	}
	str := func(tag uint64, s string) {
		if s != "" {
			dst = appendBytesField(dst, tag, []byte(s))
		}
	}
	num(tagMode, uint64(e.Mode))
	num(tagUID, uint64(e.UID))
	num(tagGID, uint64(e.GID))
	str(tagUser, e.User)
	str(tagGroup, e.Group)
	signed(tagSize, e.Size)
	signed(tagMTime, e.MTime)
	signed(tagATime, e.ATime)
	signed(tagCTime, e.CTime)
	num(tagDev, e.Dev)
	num(tagInode, e.Inode)
	num(tagNLink, uint64(e.NLink))
	num(tagRdev, e.Rdev)
	str(tagTarget, e.Target)
	for _, x := range e.Xattrs {
		v := binary.AppendUvarint(nil, uint64(len(x.Name)))
		v = append(v, x.Name...)
		v = append(v, x.Value...)
		dst = appendBytesField(dst, tagXattr, v)
	}
	if len(e.Hash) > 0 {
		dst = appendBytesField(dst, tagHash, e.Hash)
	}
	num(tagSeq, e.Loc.Seq)
	num(tagOff, e.Loc.Off)
	num(tagFlags, uint64(e.Flags))
	num(tagHashKind, uint64(e.HashKind))
	num(tagInBlock, uint64(e.Loc.InBlock))
	num(tagEndSeq, e.Loc.EndSeq)
	if e.Blocks != nil {
		dst = appendBytesField(dst, tagBlocks, AppendBlockList(nil, e.Blocks))
	}
	return dst
}

// DecodeEntry decodes one entry encoded by AppendEntry. Unknown tags are
// skipped so that entries written by later versions stay readable.
func DecodeEntry(b []byte) (Entry, error) {
	var e Entry
	for len(b) > 0 {
		tag, n := varint.Uvarint(b)
		if n <= 0 {
			return e, fmt.Errorf("%w: bad field tag", ErrCorrupt)
		}
		b = b[n:]
		l, n := varint.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return e, fmt.Errorf("%w: field %d length out of range", ErrCorrupt, tag)
		}
		v := b[n : n+int(l)]
		b = b[n+int(l):]
		var u uint64
		switch tag {
		case tagPath, tagUser, tagGroup, tagTarget, tagXattr, tagHash, tagBlocks:
		default:
			var m int
			u, m = varint.Uvarint(v)
			if m <= 0 || m != len(v) {
				if tag <= tagBlocks {
					return e, fmt.Errorf("%w: field %d is not a varint", ErrCorrupt, tag)
				}
				continue
			}
		}
		s := int64(u>>1) ^ -int64(u&1)
		switch tag {
		case tagPath:
			e.Path = string(v)
		case tagType:
			e.Type = Type(u)
		case tagMode:
			e.Mode = uint32(u)
		case tagUID:
			e.UID = uint32(u)
		case tagGID:
			e.GID = uint32(u)
		case tagUser:
			e.User = string(v)
		case tagGroup:
			e.Group = string(v)
		case tagSize:
			e.Size = s
		case tagMTime:
			e.MTime = s
		case tagATime:
			e.ATime = s
		case tagCTime:
			e.CTime = s
		case tagDev:
			e.Dev = u
		case tagInode:
			e.Inode = u
		case tagNLink:
			e.NLink = uint32(u)
		case tagRdev:
			e.Rdev = u
		case tagTarget:
			e.Target = string(v)
		case tagXattr:
			nl, m := varint.Uvarint(v)
			if m <= 0 || nl > uint64(len(v)-m) {
				return e, fmt.Errorf("%w: bad xattr", ErrCorrupt)
			}
			e.Xattrs = append(e.Xattrs, Xattr{
				Name:  string(v[m : m+int(nl)]),
				Value: append([]byte{}, v[m+int(nl):]...),
			})
		case tagHash:
			e.Hash = append([]byte{}, v...)
		case tagSeq:
			e.Loc.Seq = u
		case tagOff:
			e.Loc.Off = u
		case tagInBlock:
			e.Loc.InBlock = uint32(u)
		case tagEndSeq:
			e.Loc.EndSeq = u
		case tagFlags:
			e.Flags = uint32(u)
		case tagHashKind:
			e.HashKind = HashKind(u)
		case tagBlocks:
			bl, err := DecodeBlockList(v)
			if err != nil {
				return e, fmt.Errorf("entry %q: %w", e.Path, err)
			}
			e.Blocks = bl
		}
	}
	if e.Path == "" {
		return e, fmt.Errorf("%w: entry without a path", ErrCorrupt)
	}
	if e.Type == 0 {
		return e, fmt.Errorf("%w: entry %q without a type", ErrCorrupt, e.Path)
	}
	return e, nil
}
