package tape

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cairnbackup/cairn/media/volume"
)

// Errors of the volume layer on tape.
var (
	// ErrWrongVolume: the cartridge holds another volume than expected.
	ErrWrongVolume = errors.New("cartridge holds another volume")
	// ErrLabelled: WriteLabel found data on the cartridge and was not told
	// to overwrite it.
	ErrLabelled = errors.New("cartridge already holds data")
	// ErrLayout: the tape's files do not match what the catalog says was
	// committed (a file mark missing where a part must end, data missing).
	ErrLayout = errors.New("tape layout does not match the committed parts")
)

// labelSizes are the block sizes ReadLabel tries when the drive's is not
// the volume's: the default first, then the powers of two in range.
var labelSizes = []int{volume.DefaultBlockSize, 64 << 10, 128 << 10, 512 << 10, 1 << 20, 2 << 20, 4 << 20}

// ReadLabel rewinds and reads the volume label in record 0. A tape written
// with another block size than the drive is set to cannot be read in fixed
// block mode, so ReadLabel tries the drive's block size, then the common
// ones, and leaves the drive set to the volume's. It leaves the tape after
// the label record.
func ReadLabel(ctx context.Context, d Drive) (volume.Label, error) {
	st, err := d.Status(ctx)
	if err != nil {
		return volume.Label{}, err
	}
	if !st.Medium {
		return volume.Label{}, fmt.Errorf("tape drive %s: read label: %w", d.Name(), ErrNoMedium)
	}
	sizes := append([]int{st.BlockSize}, labelSizes...)
	tried := map[int]bool{}
	var last error
	for len(sizes) > 0 {
		size := sizes[0]
		sizes = sizes[1:]
		if size <= 0 || tried[size] {
			continue
		}
		tried[size] = true
		l, err := readLabelAs(ctx, d, size, st.BlockSize)
		st.BlockSize = size
		switch {
		case err == nil && l.BlockSize == size:
			return l, nil
		case err == nil:
			// The record read, but the label names another size: the
			// volume's records are that size, so read it that way.
			sizes = append([]int{l.BlockSize}, sizes...)
			delete(tried, l.BlockSize)
			last = fmt.Errorf("label says block size %d", l.BlockSize)
		case errors.Is(err, ErrBlockSize), errors.Is(err, ErrMedium):
			last = err // another block size, or unreadable with this one
		default:
			return volume.Label{}, err
		}
	}
	return volume.Label{}, fmt.Errorf("tape drive %s: %w: no label readable in record 0 with any block size from 64 KiB to 4 MiB (last: %v)", d.Name(), volume.ErrNotVolume, last)
}

func readLabelAs(ctx context.Context, d Drive, size, cur int) (volume.Label, error) {
	if size != cur {
		if err := d.SetBlockSize(ctx, size); err != nil {
			return volume.Label{}, err
		}
	}
	if err := d.Rewind(ctx); err != nil {
		return volume.Label{}, err
	}
	rec := make([]byte, size)
	if _, err := d.ReadRecord(ctx, rec); err != nil {
		if errors.Is(err, ErrEndOfData) || errors.Is(err, ErrFileMark) {
			return volume.Label{}, fmt.Errorf("tape drive %s: %w: %w", d.Name(), volume.ErrNotVolume, errBlank)
		}
		return volume.Label{}, err
	}
	l, err := volume.ReadLabel(bytes.NewReader(rec))
	if err != nil {
		return volume.Label{}, fmt.Errorf("tape drive %s: %w", d.Name(), err)
	}
	return l, nil
}

// WriteLabel makes the cartridge in d a new, empty Cairn volume: the label
// record, padded to l.BlockSize, and a file mark, from the beginning of
// the tape. Everything on the tape is lost, so a cartridge that holds
// anything is refused unless overwrite is set. Empty label fields get
// their defaults (media type "tape", creation time now). The volume id
// also goes into the cartridge memory when the drive can write it. The
// label is read back before WriteLabel returns; the tape is then at the
// end of data, where OpenAppender(..., l.BlockSize, 0) starts.
func WriteLabel(ctx context.Context, d Drive, l volume.Label, overwrite bool) error {
	if l.MediaType == "" {
		l.MediaType = "tape"
	}
	if l.Created.IsZero() {
		l.Created = time.Now().UTC()
	}
	rec, err := volume.EncodeLabel(l)
	if err != nil {
		return fmt.Errorf("tape drive %s: label: %w", d.Name(), err)
	}
	st, err := d.Status(ctx)
	if err != nil {
		return err
	}
	switch {
	case !st.Medium:
		return fmt.Errorf("tape drive %s: label volume %s: %w", d.Name(), l.VolumeID, ErrNoMedium)
	case st.WriteProtected:
		return fmt.Errorf("tape drive %s: label volume %s: %w", d.Name(), l.VolumeID, ErrWriteProtected)
	}
	if !overwrite {
		if err := checkBlank(ctx, d); err != nil {
			return err
		}
	}
	if err := d.SetBlockSize(ctx, l.BlockSize); err != nil {
		return err
	}
	if err := d.Rewind(ctx); err != nil {
		return err
	}
	if err := d.WriteRecord(ctx, rec); err != nil {
		return fmt.Errorf("tape drive %s: write label of volume %s: %w", d.Name(), l.VolumeID, err)
	}
	if err := d.WriteFileMark(ctx); err != nil {
		return fmt.Errorf("tape drive %s: write label of volume %s: %w", d.Name(), l.VolumeID, err)
	}
	if cm, ok := d.(CartridgeMemoryWriter); ok {
		if err := cm.SetVolumeID(ctx, l.VolumeID); err != nil {
			return err
		}
	}
	got, err := ReadLabel(ctx, d)
	if err != nil {
		return fmt.Errorf("tape drive %s: read back the label of volume %s: %w", d.Name(), l.VolumeID, err)
	}
	if got.VolumeID != l.VolumeID || got.BlockSize != l.BlockSize {
		return fmt.Errorf("tape drive %s: the label read back (%+v) differs from the one written (%+v): the drive is not keeping what is written", d.Name(), got, l)
	}
	return d.SeekEndOfData(ctx)
}

// checkBlank refuses a cartridge with anything on it. Blank is told by
// where end of data is, not by reading: st answers a read of blank tape at
// the beginning with EIO, like a damaged block.
func checkBlank(ctx context.Context, d Drive) error {
	if err := d.SeekEndOfData(ctx); err != nil {
		return err
	}
	p, err := d.Position(ctx)
	if err != nil {
		return err
	}
	if p.Block == 0 {
		return nil
	}
	l, err := ReadLabel(ctx, d)
	switch {
	case err == nil:
		return fmt.Errorf("tape drive %s: the cartridge holds volume %s (%q, pool %q): %w; relabelling erases it, say so explicitly", d.Name(), l.VolumeID, l.Name, l.Pool, ErrLabelled)
	case errors.Is(err, volume.ErrNotVolume):
		return fmt.Errorf("tape drive %s: the cartridge holds data that is not a Cairn volume: %w; relabelling erases it, say so explicitly", d.Name(), ErrLabelled)
	}
	return err
}

// errBlank marks "the cartridge is blank" inside a not-a-volume error.
var errBlank = errors.New("the cartridge is blank")

// File is one tape file of a volume: the label (number 0), then one per
// session part.
type File struct {
	Number int
	// Start is the volume offset of the file's first byte, Block the
	// logical block of its first record.
	Start, Block int64
	Records      int64
	// Marked: a file mark follows. The last file may lack it: a part that
	// a crash or a lost drive cut short.
	Marked bool
}

// Layout is how a volume lies on a tape.
type Layout struct {
	BlockSize int
	Files     []File
	// End is the volume offset of the end of data: the volume's size.
	End int64
	// EndBlock is the logical block of the end of data.
	EndBlock int64
}

// PartStarts are the volume offsets of the session parts, in order: what
// NewReader and OpenAppender need.
func (l *Layout) PartStarts() []int64 {
	var s []int64
	for _, f := range l.Files[1:] {
		s = append(s, f.Start)
	}
	return s
}

// Committed is where the last file that a file mark closes ends, and how
// many parts lie before it: where OpenAppender appends, cutting off a torn
// last part.
func (l *Layout) Committed() (end int64, parts int) {
	for i := len(l.Files) - 1; i >= 0; i-- {
		if f := l.Files[i]; f.Marked {
			return f.Start + f.Records*int64(l.BlockSize), i
		}
	}
	return int64(l.BlockSize), 0
}

// MapVolume finds the files of the volume on the tape in d by spacing over
// its file marks: one fast search per file, no data read but the label.
// It is what reading a volume without a catalog starts with.
func MapVolume(ctx context.Context, d Drive) (*Layout, error) {
	lbl, err := ReadLabel(ctx, d)
	if err != nil {
		return nil, err
	}
	bs := int64(lbl.BlockSize)
	lay := &Layout{BlockSize: lbl.BlockSize, Files: []File{{Number: 0, Start: 0, Block: 0}}}
	for k := 1; ; k++ {
		prev := &lay.Files[k-1]
		serr := d.SpaceFileMarks(ctx, 1)
		if serr != nil && !errors.Is(serr, ErrEndOfData) {
			return nil, serr
		}
		p, err := d.Position(ctx)
		if err != nil {
			return nil, err
		}
		if serr == nil {
			prev.Records = p.Block - 1 - prev.Block
			prev.Marked = true
			lay.Files = append(lay.Files, File{Number: k, Block: p.Block, Start: (p.Block - int64(k)) * bs})
			continue
		}
		// End of data. A file after the last mark holds what a write cut
		// short; an empty one is no file.
		prev.Records = p.Block - prev.Block
		if prev.Records == 0 && k > 1 {
			lay.Files = lay.Files[:k-1]
		}
		marks := int64(0)
		for _, f := range lay.Files {
			if f.Marked {
				marks++
			}
		}
		lay.EndBlock = p.Block
		lay.End = (p.Block - marks) * bs
		return lay, nil
	}
}
