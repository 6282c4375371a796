// Package disk keeps volumes as files in a pool directory: NAME.cvol, each
// holding the volume format of media/volume byte for byte, so a disk
// volume can be copied to tape or read with `cairn volume` as it is.
//
// A volume file is appended to by one writer at a time (an exclusive
// flock while an Appender is open) and read by any number of readers,
// which open it read-only. The catalog records how far each volume is
// committed; anything past that when the volume is next opened for
// appending is a part a crash left unfinished, and OpenAppend cuts it off.
package disk

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"

	"github.com/cairnbackup/cairn/media/volume"
	"github.com/google/uuid"
	"golang.org/x/sys/unix"
)

// Ext is the file name extension of disk volumes.
const Ext = ".cvol"

// Pool is a directory of disk volumes.
type Pool struct {
	Name string
	Dir  string
	// MaxVolumeBytes caps each volume file; 0 means no cap (the volume
	// grows until the session ends or the filesystem is full).
	MaxVolumeBytes int64
	// BlockSize, when set, is the block size of every volume created
	// here. 0 lets each volume's label say (volume.DefaultBlockSize when
	// it says nothing): the catalog's pool settings decide, per volume,
	// and sessions that write the pool at once may use different ones. A
	// Pool is shared by those sessions and never changed by them.
	BlockSize int
}

// Errors a caller acts on.
var (
	// ErrWrongVolume: the file holds another volume than the catalog expects.
	ErrWrongVolume = errors.New("volume file holds another volume")
	// ErrMissingData: the file is shorter than what the catalog records as
	// committed; data is lost and the volume must be marked damaged.
	ErrMissingData = errors.New("volume file is shorter than its committed data")
	// ErrBusy: another writer has the volume open for appending.
	ErrBusy = errors.New("volume is open for appending by another writer")
)

// SpaceError is a write that failed for lack of space (ENOSPC) or quota
// (EDQUOT). errors.Is(err, syscall.ENOSPC) sees through it.
type SpaceError struct {
	Pool, Dir, Volume string
	Err               error
}

func (e *SpaceError) Error() string {
	what := "no space left on device"
	var errno syscall.Errno
	if errors.As(e.Err, &errno) {
		what = errno.Error()
	}
	return fmt.Sprintf("disk pool %q (%s): %s writing volume %s", e.Pool, e.Dir, what, e.Volume)
}

func (e *SpaceError) Unwrap() error { return e.Err }

func (p *Pool) blockSize() int {
	if p.BlockSize == 0 {
		return volume.DefaultBlockSize
	}
	return p.BlockSize
}

// Validate names the first field that is wrong and how to fix it.
func (p *Pool) Validate() error {
	if p.Name == "" {
		return errors.New("disk pool: no name")
	}
	if p.Dir == "" || !filepath.IsAbs(p.Dir) {
		return fmt.Errorf("disk pool %q: directory %q must be an absolute path", p.Name, p.Dir)
	}
	if err := volume.ValidBlockSize(p.blockSize()); err != nil {
		return fmt.Errorf("disk pool %q: %w", p.Name, err)
	}
	bs := p.BlockSize
	if bs == 0 {
		bs = volume.MinBlockSize // the labels say; Create checks each
	}
	if min := 8 * int64(bs); p.MaxVolumeBytes != 0 && p.MaxVolumeBytes < min {
		return fmt.Errorf("disk pool %q: max volume bytes %d is below %d (8 blocks); use 0 for no limit", p.Name, p.MaxVolumeBytes, min)
	}
	return nil
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`)

// Path is the file of volume name.
func (p *Pool) Path(name string) (string, error) {
	if !validName.MatchString(name) {
		return "", fmt.Errorf("disk pool %q: %q is not a valid volume name (letters, digits, '.', '_' and '-', starting with a letter or digit)", p.Name, name)
	}
	return filepath.Join(p.Dir, name+Ext), nil
}

// Create makes a new volume file holding only its label, durably: the
// file and the directory entry are synced and the label read back before
// Create returns. It never overwrites a file, and leaves none behind when
// it fails. Empty label fields are filled from the pool and name.
func (p *Pool) Create(name string, label volume.Label) (err error) {
	if err := p.Validate(); err != nil {
		return err
	}
	path, err := p.Path(name)
	if err != nil {
		return err
	}
	if label.BlockSize == 0 {
		label.BlockSize = p.blockSize()
	}
	if p.BlockSize != 0 && label.BlockSize != p.BlockSize {
		return fmt.Errorf("disk pool %q: label block size %d differs from the pool's %d", p.Name, label.BlockSize, p.BlockSize)
	}
	if err := volume.ValidBlockSize(label.BlockSize); err != nil {
		return fmt.Errorf("disk pool %q: volume %s: %w", p.Name, name, err)
	}
	if min := 8 * int64(label.BlockSize); p.MaxVolumeBytes != 0 && p.MaxVolumeBytes < min {
		return fmt.Errorf("disk pool %q: volume %s: max volume bytes %d is below %d (8 blocks of %d)", p.Name, name, p.MaxVolumeBytes, min, label.BlockSize)
	}
	label = volume.PagedLabel(label, p.Name, name)
	if label.MediaType == "" {
		label.MediaType = "disk"
	}
	data, err := volume.EncodeLabel(label)
	if err != nil {
		return fmt.Errorf("disk pool %q: create volume %s: %w", p.Name, name, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("disk pool %q: volume file %s already exists; refusing to overwrite it: %w", p.Name, path, err)
	}
	if err != nil {
		return p.wrap(name, fmt.Errorf("disk pool %q: create volume file: %w", p.Name, err))
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(path)
			syncDir(p.Dir)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return p.wrap(name, fmt.Errorf("disk pool %q: write label of volume %s: %w", p.Name, name, err))
	}
	if err := f.Sync(); err != nil {
		return p.wrap(name, fmt.Errorf("disk pool %q: sync volume %s: %w", p.Name, name, err))
	}
	if err := f.Close(); err != nil {
		return p.wrap(name, fmt.Errorf("disk pool %q: close volume %s: %w", p.Name, name, err))
	}
	if err := syncDir(p.Dir); err != nil {
		return fmt.Errorf("disk pool %q: sync directory %s: %w", p.Name, p.Dir, err)
	}
	r, _, err := p.OpenRead(name)
	if err != nil {
		return err
	}
	defer r.Close()
	got, err := volume.ReadLabel(r)
	if err != nil {
		return fmt.Errorf("disk pool %q: read back the label of volume %s: %w", p.Name, name, err)
	}
	if got.VolumeID != label.VolumeID || got.Name != label.Name || got.Barcode != label.Barcode || got.Pool != label.Pool ||
		got.BlockSize != label.BlockSize || got.MediaType != label.MediaType || !got.Created.Equal(label.Created) {
		return fmt.Errorf("disk pool %q: the label read back from %s differs from the one written (%+v, wrote %+v): the disk is not keeping what is written", p.Name, path, got, label)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// wrap turns a lack of space into a SpaceError.
func (p *Pool) wrap(name string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return &SpaceError{Pool: p.Name, Dir: p.Dir, Volume: name, Err: err}
	}
	return err
}

// OpenRead opens a volume file read-only and returns it with its size.
// Reading neither writes the file nor, where the kernel allows, updates
// its access time.
func (p *Pool) OpenRead(name string) (*os.File, int64, error) {
	path, err := p.Path(name)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOATIME, 0)
	if errors.Is(err, fs.ErrPermission) {
		// O_NOATIME needs the file's owner; anyone else reads without it.
		f, err = os.OpenFile(path, os.O_RDONLY, 0)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("disk pool %q: open volume %s: %w", p.Name, name, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("disk pool %q: open volume %s: %w", p.Name, name, err)
	}
	return f, st.Size(), nil
}

// Volumes lists the names of the volume files in the pool, sorted.
func (p *Pool) Volumes() ([]string, error) {
	ents, err := os.ReadDir(p.Dir)
	if err != nil {
		return nil, fmt.Errorf("disk pool %q: %w", p.Name, err)
	}
	var names []string
	for _, e := range ents {
		if n, ok := strings.CutSuffix(e.Name(), Ext); ok && e.Type().IsRegular() && validName.MatchString(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names, nil
}

// Usage reports the free (for unprivileged writers) and total bytes of the
// filesystem that holds the pool.
func (p *Pool) Usage() (free, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(p.Dir, &st); err != nil {
		return 0, 0, fmt.Errorf("disk pool %q: statfs %s: %w", p.Name, p.Dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

// Appender is a volume file open for appending one session part after
// another. It implements volume.Appender.
type Appender struct {
	pool  *Pool
	name  string
	path  string
	f     *os.File
	label volume.Label
	off   int64
	// behind is where the writeback the Appender started ends: Write
	// starts the disk's writes of every writeBehind bytes written.
	behind int64
	// TornBytes is what OpenAppend cut off past the committed end: a part
	// a crashed session left unfinished. The caller logs it.
	TornBytes int64
}

var _ volume.Appender = (*Appender)(nil)

// OpenAppend opens volume name, which the catalog says is volume id with
// committedEnd bytes committed, for appending at committedEnd. Bytes past
// committedEnd belong to no committed session: they are cut off and
// counted in TornBytes.
func (p *Pool) OpenAppend(name string, id uuid.UUID, committedEnd int64) (*Appender, error) {
	path, err := p.Path(name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("disk pool %q: open volume %s for appending: %w", p.Name, name, err)
	}
	a, err := p.openAppend(f, name, path, id, committedEnd)
	if err != nil {
		f.Close()
		return nil, err
	}
	return a, nil
}

func (p *Pool) openAppend(f *os.File, name, path string, id uuid.UUID, committedEnd int64) (*Appender, error) {
	l, err := volume.ReadLabel(f)
	if err != nil {
		return nil, fmt.Errorf("disk pool %q: volume file %s: %w", p.Name, path, err)
	}
	if l.VolumeID != id {
		return nil, fmt.Errorf("disk pool %q: volume file %s holds volume %s, catalog expects %s: %w", p.Name, path, l.VolumeID, id, ErrWrongVolume)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("disk pool %q: volume file %s: %w", p.Name, path, ErrBusy)
		}
		return nil, fmt.Errorf("disk pool %q: lock volume file %s: %w", p.Name, path, err)
	}
	if pa := int64(l.PartAlignment()); committedEnd < int64(l.BlockSize) || committedEnd%pa != 0 {
		return nil, fmt.Errorf("disk pool %q: volume %s: committed end %d is not a multiple of the part alignment %d past the label", p.Name, name, committedEnd, pa)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("disk pool %q: volume %s: %w", p.Name, name, err)
	}
	if st.Size() < committedEnd {
		return nil, fmt.Errorf("disk pool %q: volume file %s is %d bytes, but the catalog has %d bytes committed on it: mark the volume damaged and check the disk: %w", p.Name, path, st.Size(), committedEnd, ErrMissingData)
	}
	a := &Appender{pool: p, name: name, path: path, f: f, label: l, off: committedEnd, behind: committedEnd}
	if torn := st.Size() - committedEnd; torn > 0 {
		if err := a.truncate(committedEnd); err != nil {
			return nil, err
		}
		a.TornBytes = torn
	}
	return a, nil
}

func (a *Appender) VolumeID() uuid.UUID { return a.label.VolumeID }
func (a *Appender) BlockSize() int      { return a.label.BlockSize }

// PartAlign makes the session writer start parts on the volume's part
// alignment: a page on the volumes of format 2, a block on format 1 ones,
// which keep the layout they were labeled with.
func (a *Appender) PartAlign() int      { return a.label.PartAlignment() }
func (a *Appender) Label() volume.Label { return a.label }
func (a *Appender) Name() string        { return a.name }
func (a *Appender) Offset() int64       { return a.off }
func (a *Appender) Remaining() int64 {
	if a.pool.MaxVolumeBytes == 0 {
		return math.MaxInt64 - a.off
	}
	return max(0, a.pool.MaxVolumeBytes-a.off)
}

// writeBehind is how much an Appender writes before it has the kernel
// start writing it to the disk. Left to itself, the kernel writes a dirty
// page back after 30 seconds or once a tenth of the memory is dirty: a
// backup of hundreds of megabytes then ended in a Sync that wrote all of
// it while the backup waited, the disk idle until then. Started every few
// megabytes, the writes go on while the backup does, and Sync finds
// little left to do.
const writeBehind = 8 << 20

// Write writes p at Offset. A lack of space comes back as a *SpaceError.
func (a *Appender) Write(p []byte) (int, error) {
	off := a.off
	n, err := a.f.WriteAt(p, off)
	a.off += int64(n)
	if err != nil {
		return n, a.pool.wrap(a.name, fmt.Errorf("disk pool %q: write volume %s at offset %d: %w", a.pool.Name, a.name, off, err))
	}
	if a.off-a.behind >= writeBehind {
		// Only a start (it waits for no write, but for a free slot in a
		// full disk queue): an error of the writes comes from Sync.
		_ = unix.SyncFileRange(int(a.f.Fd()), a.behind, a.off-a.behind, unix.SYNC_FILE_RANGE_WRITE)
		a.behind = a.off
	}
	return n, nil
}

// Sync makes what was written durable.
func (a *Appender) Sync() error {
	if err := a.f.Sync(); err != nil {
		// Filesystems that allocate late report ENOSPC here.
		return a.pool.wrap(a.name, fmt.Errorf("disk pool %q: sync volume %s: %w", a.pool.Name, a.name, err))
	}
	return nil
}

// Truncate cuts the volume back to to (at or past the label, at most
// Offset), to roll back a session that failed, and syncs.
func (a *Appender) Truncate(to int64) error {
	if to < int64(a.label.BlockSize) || to > a.off {
		return fmt.Errorf("disk pool %q: volume %s: cannot truncate to %d: it must lie between the label end %d and the write offset %d", a.pool.Name, a.name, to, a.label.BlockSize, a.off)
	}
	return a.truncate(to)
}

func (a *Appender) truncate(to int64) error {
	if err := a.f.Truncate(to); err != nil {
		return fmt.Errorf("disk pool %q: truncate volume %s to %d: %w", a.pool.Name, a.name, to, err)
	}
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("disk pool %q: sync volume %s: %w", a.pool.Name, a.name, err)
	}
	a.off = to
	a.behind = min(a.behind, to)
	return nil
}

// Close releases the file and its lock. It does not sync: the session
// writer syncs every part it closes.
func (a *Appender) Close() error {
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("disk pool %q: close volume %s: %w", a.pool.Name, a.name, err)
	}
	return nil
}

// Delete removes volume name, which the catalog says is volume id, and
// syncs the directory, so that once Delete returns the file is gone for
// good. A file that is already gone is no error: the servers repeat a
// deletion whose answer they lost, or that a crash cut short. A file that
// holds another volume (ErrWrongVolume) or that a writer holds
// (ErrBusy) is left alone. Readers that have the file open go on reading
// it until they close it.
func (p *Pool) Delete(name string, id uuid.UUID) error {
	path, err := p.Path(name)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return syncDir(p.Dir)
	}
	if err != nil {
		return fmt.Errorf("disk pool %q: open volume %s to delete it: %w", p.Name, name, err)
	}
	defer f.Close()
	l, err := volume.ReadLabel(f)
	if err != nil {
		return fmt.Errorf("disk pool %q: volume file %s: %w; not deleted", p.Name, path, err)
	}
	if l.VolumeID != id {
		return fmt.Errorf("disk pool %q: volume file %s holds volume %s, not %s: not deleted: %w", p.Name, path, l.VolumeID, id, ErrWrongVolume)
	}
	// The writer's lock: held until the file is unlinked, so no writer
	// opens it in between.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("disk pool %q: volume file %s: %w", p.Name, path, ErrBusy)
		}
		return fmt.Errorf("disk pool %q: lock volume file %s: %w", p.Name, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("disk pool %q: delete volume %s: %w", p.Name, name, err)
	}
	if err := syncDir(p.Dir); err != nil {
		return fmt.Errorf("disk pool %q: sync directory %s: %w", p.Name, p.Dir, err)
	}
	return nil
}
