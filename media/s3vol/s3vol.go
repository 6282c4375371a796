// Package s3vol keeps volumes in an S3 bucket (AWS S3 or any
// S3-compatible store), through github.com/minio/minio-go/v7. A volume
// is a prefix, NAME/, and its bytes are the volume format of
// media/volume as on disk, cut into immutable objects:
//
//	NAME/OFFSET.GEN
//
// where OFFSET (16 hex digits) is the volume offset of the object's first
// byte and GEN (8 hex digits) counts the objects ever begun on the
// volume. The label is the object at offset 0; each session part is one
// object, a multipart upload begun at the part's start and completed at
// its sync point (the PartEnd, padded), so a volume's byte at offset X
// is in the object that starts at or before X and ends after it.
//
// Nothing is ever rewritten in place:
//
//   - A session that fails before its sync point leaves an upload that is
//     never completed: no object, and the upload aborted (or, when the
//     store is away, aborted by the next OpenAppend; a bucket lifecycle
//     rule AbortIncompleteMultipartUpload cleans what no one opens again).
//   - A part completed but never committed by the catalog lies at or past
//     the volume's committed end. The next OpenAppend deletes it when the
//     store lets it (it is not locked), and otherwise leaves it: the next
//     session's object at the same offset has a higher GEN, and a reader
//     follows, at each offset, the object with the highest GEN, which is
//     the last one written there. Committed bytes are never written again,
//     so below the committed end the chain is the catalog's.
//
// Object lock: when the pool has a lock mode (governance or compliance),
// every object is born locked (its retention set on the upload, not after
// it), until the retain-until date the session gives, and the label
// object's retention is extended to the latest date of any part on the
// volume. Deletes and overwrites of a locked object are the store's to
// refuse. A reader reads, of each key, its first version, so an object
// overwritten (a new version) or hidden by a delete marker behind Cairn's
// back still reads as written, on a versioned bucket (object lock needs
// one).
package s3vol

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/cairnbackup/cairn/internal/readahead"
	"github.com/cairnbackup/cairn/media/volume"
)

// Lock modes of a pool.
const (
	LockNone       = ""
	LockGovernance = "governance"
	LockCompliance = "compliance"
)

// DefaultPartSize is the size of each uploaded part of a multipart
// upload: S3 wants at least 5 MiB for every part but the last, and an
// Appender holds one part in memory.
const DefaultPartSize = 16 << 20

// Config is one bucket (and prefix in it) of volumes.
type Config struct {
	// Pool names the pool in errors.
	Pool string
	// Endpoint is the store's URL, http:// or https:// (TLS).
	Endpoint string
	Bucket   string
	// Region is the bucket's region; empty lets the store say.
	Region string
	// Prefix is where in the bucket the volumes are ("" or ending in /).
	Prefix string
	// CAFile is a PEM file of the CAs that sign the store's TLS
	// certificate, for a store with its own CA; empty uses the system's.
	CAFile string
	// AccessKey and SecretKey are the node's credentials.
	AccessKey, SecretKey string
	// LockMode is LockGovernance or LockCompliance for a bucket with
	// object lock, whose objects the pool locks; LockNone locks nothing.
	LockMode string
	// MaxVolumeBytes caps each volume; 0 means no cap.
	MaxVolumeBytes int64
	// PartSize is the upload part size (0: DefaultPartSize).
	PartSize int64
}

var validPrefix = regexp.MustCompile(`^([A-Za-z0-9._-]+/)*$`)

// Validate names the first field that is wrong and how to fix it. It
// does not check the credentials, which Check tries on the store.
func (c Config) Validate() error {
	u, err := url.Parse(c.Endpoint)
	switch {
	case c.Pool == "":
		return errors.New("s3 pool: no name")
	case c.Endpoint == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/"):
		return fmt.Errorf("s3 pool %q: endpoint %q must be a URL like https://s3.example.com or http://127.0.0.1:7070 (no path: the bucket is a field of its own)", c.Pool, c.Endpoint)
	case c.Bucket == "":
		return fmt.Errorf("s3 pool %q: no bucket", c.Pool)
	case !validPrefix.MatchString(c.Prefix):
		return fmt.Errorf("s3 pool %q: prefix %q must be empty or path segments each ending in / (letters, digits, '.', '_', '-')", c.Pool, c.Prefix)
	case c.LockMode != LockNone && c.LockMode != LockGovernance && c.LockMode != LockCompliance:
		return fmt.Errorf("s3 pool %q: lock mode %q is not governance or compliance (or empty for none)", c.Pool, c.LockMode)
	case c.MaxVolumeBytes < 0:
		return fmt.Errorf("s3 pool %q: max volume bytes %d is negative; use 0 for no limit", c.Pool, c.MaxVolumeBytes)
	case c.PartSize != 0 && (c.PartSize < 5<<20 || c.PartSize > 1<<30):
		return fmt.Errorf("s3 pool %q: part size %d must lie between 5 MiB and 1 GiB", c.Pool, c.PartSize)
	}
	return nil
}

// Errors a caller acts on.
var (
	// ErrWrongVolume: the prefix holds another volume than the catalog expects.
	ErrWrongVolume = errors.New("volume holds another volume")
	// ErrMissingData: the volume's objects end before what the catalog
	// records as committed: data is lost on the store.
	ErrMissingData = errors.New("volume is shorter than its committed data")
	// ErrNoVolume: no object of the volume is there.
	ErrNoVolume = errors.New("no such volume")
	// ErrLocked: the store refused to delete an object it holds locked.
	ErrLocked = errors.New("object is locked")
)

// StoreError is the store refusing the pool, or not answering: the
// caller shows it as it is, with what to do.
type StoreError struct {
	Pool, Endpoint, Bucket string
	// Code is the S3 error code (AccessDenied, NoSuchBucket, ...), or ""
	// when the store did not answer.
	Code string
	Hint string
	Err  error
}

func (e *StoreError) Error() string {
	s := fmt.Sprintf("s3 store %s, bucket %s: %v", e.Endpoint, e.Bucket, e.Err)
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

func (e *StoreError) Unwrap() error { return e.Err }

// Unreachable says whether the store did not answer at all.
func (e *StoreError) Unreachable() bool { return e.Code == "" }

// Pool is one bucket's volumes.
type Pool struct {
	cfg   Config
	c     *minio.Client
	core  minio.Core
	stats stats
}

// New returns the pool of cfg; it connects on first use.
func New(cfg Config) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, fmt.Errorf("s3 pool %q: no credentials (an access key and a secret key)", cfg.Pool)
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	u, _ := url.Parse(cfg.Endpoint)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("s3 pool %q: read CA file: %w", cfg.Pool, err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 pool %q: CA file %s holds no PEM certificate", cfg.Pool, cfg.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	// A store that stops answering mid-request must fail the request, not
	// hang the session: a part upload of PartSize takes seconds.
	tr.ResponseHeaderTimeout = 2 * time.Minute
	c, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		Transport:    tr,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   3,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 pool %q: %w", cfg.Pool, err)
	}
	return &Pool{cfg: cfg, c: c, core: minio.Core{Client: c}}, nil
}

// Config is the pool's configuration.
func (p *Pool) Config() Config { return p.cfg }

// storeErr turns a store's error into a *StoreError with what to do.
func (p *Pool) storeErr(err error) error {
	if err == nil {
		return nil
	}
	var se *StoreError
	if errors.As(err, &se) {
		return err
	}
	e := &StoreError{Pool: p.cfg.Pool, Endpoint: p.cfg.Endpoint, Bucket: p.cfg.Bucket, Err: err}
	r := minio.ToErrorResponse(err)
	e.Code = r.Code
	switch r.Code {
	case "":
		if r.StatusCode != 0 {
			e.Code = strconv.Itoa(r.StatusCode)
		} else {
			e.Hint = "the store did not answer: check that it runs and that the endpoint is right"
		}
	case "InvalidAccessKeyId", "SignatureDoesNotMatch":
		e.Hint = "the store refused the node's credentials: check the access key and secret key (from the environment or the credentials file)"
	case "AccessDenied":
		e.Hint = "the store refused the request: the node's credentials may lack permission for it (an object under lock is refused by design)"
	case "NoSuchBucket":
		e.Hint = "create the bucket (with object lock enabled if the pool locks), or correct the pool's bucket"
	}
	return e
}

// Check asks the store whether the pool can work: the credentials are
// taken, the bucket is there, and, when the pool locks objects, the
// bucket has object lock enabled.
func (p *Pool) Check(ctx context.Context) error {
	// A listing, not a HEAD: a HEAD's refusal has no body, so wrong
	// credentials and a missing permission would look alike.
	_, err := p.core.ListObjectsV2(p.cfg.Bucket, p.cfg.Prefix, "", "", "/", 1)
	p.stats.note(p.storeErr(err), time.Now())
	if err != nil {
		return fmt.Errorf("s3 pool %q: %w", p.cfg.Pool, p.storeErr(err))
	}
	if p.cfg.LockMode == LockNone {
		return nil
	}
	enabled, _, _, _, err := p.c.GetObjectLockConfig(ctx, p.cfg.Bucket)
	if err != nil && minio.ToErrorResponse(err).Code != "ObjectLockConfigurationNotFoundError" {
		return fmt.Errorf("s3 pool %q: read the bucket's object lock configuration: %w", p.cfg.Pool, p.storeErr(err))
	}
	if enabled != "Enabled" {
		return fmt.Errorf("s3 pool %q: bucket %s does not have object lock enabled, and the pool's lock mode is %s: object lock can only be enabled when a bucket is created: create a bucket with it (aws s3api create-bucket --object-lock-enabled-for-bucket), or set no lock mode", p.cfg.Pool, p.cfg.Bucket, p.cfg.LockMode)
	}
	return nil
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$`)

// Prefix is the key prefix of volume name's objects.
func (p *Pool) Prefix(name string) (string, error) {
	if !validName.MatchString(name) {
		return "", fmt.Errorf("s3 pool %q: %q is not a valid volume name (letters, digits, '.', '_' and '-', starting with a letter or digit)", p.cfg.Pool, name)
	}
	return p.cfg.Prefix + name + "/", nil
}

func objectKey(prefix string, off int64, gen uint32) string {
	return fmt.Sprintf("%s%016x.%08x", prefix, off, gen)
}

// object is one object of a volume, in its first version.
type object struct {
	key       string
	version   string // "" on a bucket without versions
	start     int64
	gen       uint32
	size      int64
	modified  time.Time
	latest    bool // the key's newest version, in a versioned listing
	uploading bool
}

func (o object) end() int64 { return o.start + o.size }

func parseKey(prefix, key string) (start int64, gen uint32, ok bool) {
	rest, found := strings.CutPrefix(key, prefix)
	if !found || len(rest) != 16+1+8 || rest[16] != '.' {
		return 0, 0, false
	}
	s, err1 := strconv.ParseUint(rest[:16], 16, 63)
	g, err2 := strconv.ParseUint(rest[17:], 16, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return int64(s), uint32(g), true
}

// Lock is the retention an Appender gives the objects it writes.
type Lock struct {
	// Until is the retain-until date; zero locks nothing.
	Until time.Time
	// LegalHold puts each object on legal hold as well.
	LegalHold bool
}

// list returns the volume's objects, each in its first version (by
// modification time), sorted by offset and then generation.
func (p *Pool) list(ctx context.Context, prefix string) ([]object, error) {
	first := map[string]object{}
	add := func(oi minio.ObjectInfo) {
		start, gen, ok := parseKey(prefix, oi.Key)
		if !ok || oi.IsDeleteMarker {
			return
		}
		o := object{key: oi.Key, version: oi.VersionID, start: start, gen: gen, size: oi.Size, modified: oi.LastModified, latest: oi.IsLatest}
		if o.version == "null" {
			o.version = ""
		}
		if f, seen := first[oi.Key]; !seen || older(o, f) {
			first[oi.Key] = o
		}
	}
	var lerr error
	for oi := range p.c.ListObjectsIter(ctx, p.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithVersions: true}) {
		if oi.Err != nil {
			lerr = oi.Err
			break
		}
		add(oi)
	}
	if lerr != nil {
		// A store without versioned listing: the objects as they are.
		clear(first)
		for oi := range p.c.ListObjectsIter(ctx, p.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			if oi.Err != nil {
				return nil, p.storeErr(oi.Err)
			}
			add(oi)
		}
	}
	out := make([]object, 0, len(first))
	for _, o := range first {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].start != out[j].start {
			return out[i].start < out[j].start
		}
		return out[i].gen < out[j].gen
	})
	return out, nil
}

// older says whether version o of a key was written before version f. The
// store's latest version (IsLatest) is the newest, whatever its time says:
// a store may stamp the version an overwrite pushes aside when it moves it
// there, after the overwrite's own time, and listings give whole seconds.
// Between two older versions the times decide, and within one second the
// listing's order, newest first.
func older(o, f object) bool {
	switch {
	case o.version == f.version:
		return false
	case o.latest != f.latest:
		return f.latest
	case !o.modified.Equal(f.modified):
		return o.modified.Before(f.modified)
	default:
		return true
	}
}

// chain follows the volume from its label: at each offset, the object
// with the highest generation. It returns the chain and the highest
// generation of any object.
func chain(objs []object) (ch []object, maxGen uint32) {
	byStart := map[int64]object{}
	for _, o := range objs {
		maxGen = max(maxGen, o.gen)
		if b, ok := byStart[o.start]; !ok || o.gen > b.gen {
			byStart[o.start] = o
		}
	}
	for off := int64(0); ; {
		o, ok := byStart[off]
		if !ok || o.size == 0 {
			return ch, maxGen
		}
		ch = append(ch, o)
		off = o.end()
	}
}

// Create writes a new volume holding only its label, locked with lock
// in the pool's lock mode. It refuses a name that already has objects.
func (p *Pool) Create(ctx context.Context, name string, label volume.Label, lock Lock) error {
	prefix, err := p.Prefix(name)
	if err != nil {
		return err
	}
	if err := volume.ValidBlockSize(label.BlockSize); err != nil {
		return fmt.Errorf("s3 pool %q: volume %s: %w", p.cfg.Pool, name, err)
	}
	label = volume.PagedLabel(label, p.cfg.Pool, name)
	data, err := volume.EncodeLabel(label)
	if err != nil {
		return fmt.Errorf("s3 pool %q: create volume %s: %w", p.cfg.Pool, name, err)
	}
	objs, err := p.list(ctx, prefix)
	if err != nil {
		return fmt.Errorf("s3 pool %q: create volume %s: %w", p.cfg.Pool, name, err)
	}
	if len(objs) > 0 {
		return fmt.Errorf("s3 pool %q: create volume %s: %s already holds objects: a volume is never written over", p.cfg.Pool, name, prefix)
	}
	if _, err := p.put(ctx, objectKey(prefix, 0, 1), data, lock); err != nil {
		return fmt.Errorf("s3 pool %q: create volume %s: %w", p.cfg.Pool, name, err)
	}
	rd, err := p.OpenRead(ctx, name)
	if err != nil {
		return err
	}
	got, err := volume.ReadLabel(rd)
	if err != nil {
		return fmt.Errorf("s3 pool %q: read back the label of volume %s: %w", p.cfg.Pool, name, err)
	}
	if got.VolumeID != label.VolumeID || got.Name != label.Name || got.BlockSize != label.BlockSize {
		return fmt.Errorf("s3 pool %q: the label read back from %s differs from the one written: the store is not keeping what is written", p.cfg.Pool, prefix)
	}
	return nil
}

// lockOpts sets the pool's lock on an upload.
func (p *Pool) lockOpts(o *minio.PutObjectOptions, lock Lock) {
	if p.cfg.LockMode == LockNone {
		return
	}
	if !lock.Until.IsZero() {
		o.Mode = minio.Governance
		if p.cfg.LockMode == LockCompliance {
			o.Mode = minio.Compliance
		}
		o.RetainUntilDate = lock.Until.UTC().Truncate(time.Second).Add(time.Second)
	}
	if lock.LegalHold {
		o.LegalHold = minio.LegalHoldEnabled
	}
}

// put writes one small object whole, locked.
func (p *Pool) put(ctx context.Context, key string, data []byte, lock Lock) (minio.UploadInfo, error) {
	o := minio.PutObjectOptions{SendContentMd5: true, DisableMultipart: true}
	p.lockOpts(&o, lock)
	info, err := p.c.PutObject(ctx, p.cfg.Bucket, key, bytes.NewReader(data), int64(len(data)), o)
	return info, p.storeErr(err)
}

// Retention is an object's lock as the store reports it.
type Retention struct {
	Mode      string // GOVERNANCE or COMPLIANCE, "" when unlocked
	Until     time.Time
	LegalHold bool
}

// retention reads an object's lock from its headers: minio-go's
// GetObjectRetention cannot parse every store's reply (versitygw's), and
// a HEAD carries the same.
func (p *Pool) retention(ctx context.Context, key, version string) (Retention, error) {
	oi, err := p.c.StatObject(ctx, p.cfg.Bucket, key, minio.StatObjectOptions{VersionID: version})
	if err != nil {
		return Retention{}, p.storeErr(err)
	}
	h := oi.Metadata
	r := Retention{Mode: strings.ToUpper(h.Get("X-Amz-Object-Lock-Mode")), LegalHold: strings.EqualFold(h.Get("X-Amz-Object-Lock-Legal-Hold"), "ON")}
	if s := h.Get("X-Amz-Object-Lock-Retain-Until-Date"); s != "" {
		if t, err := time.Parse(time.RFC3339, s); err == nil {
			r.Until = t
		}
	}
	return r, nil
}

// ObjectRetention is the lock of volume name's object at offset off
// (the label at 0), as the store reports it.
func (p *Pool) ObjectRetention(ctx context.Context, name string, off int64) (Retention, error) {
	ch, err := p.volumeChain(ctx, name)
	if err != nil {
		return Retention{}, err
	}
	for _, o := range ch {
		if o.start == off {
			return p.retention(ctx, o.key, o.version)
		}
	}
	return Retention{}, fmt.Errorf("s3 pool %q: volume %s has no object at offset %d", p.cfg.Pool, name, off)
}

func (p *Pool) volumeChain(ctx context.Context, name string) ([]object, error) {
	prefix, err := p.Prefix(name)
	if err != nil {
		return nil, err
	}
	objs, err := p.list(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("s3 pool %q: volume %s: %w", p.cfg.Pool, name, err)
	}
	ch, _ := chain(objs)
	if len(ch) == 0 {
		return nil, fmt.Errorf("s3 pool %q: volume %s: %w under %s in bucket %s", p.cfg.Pool, name, ErrNoVolume, prefix, p.cfg.Bucket)
	}
	return ch, nil
}

// Reader reads a volume with range reads of its objects.
type Reader struct {
	p    *Pool
	ctx  context.Context
	objs []object
	size int64
	// ahead, when set, reads ahead of a run of reads in order.
	ahead *readahead.Reader
}

// OpenRead opens volume name for reading: its objects as they are now.
func (p *Pool) OpenRead(ctx context.Context, name string) (*Reader, error) {
	ch, err := p.volumeChain(ctx, name)
	if err != nil {
		return nil, err
	}
	return &Reader{p: p, ctx: ctx, objs: ch, size: ch[len(ch)-1].end()}, nil
}

// Size is the volume's length when it was opened.
func (r *Reader) Size() int64 { return r.size }

// ReadAt reads len(b) bytes at off, a range read of each object it spans
// (or, reading ahead, from the ranges read ahead).
func (r *Reader) ReadAt(b []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("s3 pool %q: read at negative offset %d", r.p.cfg.Pool, off)
	}
	if r.ahead != nil {
		return r.ahead.ReadAt(b, off)
	}
	return r.readAt(r.ctx, b, off)
}

func (r *Reader) readAt(ctx context.Context, b []byte, off int64) (int, error) {
	n := 0
	i := sort.Search(len(r.objs), func(i int) bool { return r.objs[i].end() > off })
	for n < len(b) && i < len(r.objs) {
		o := r.objs[i]
		at := off + int64(n) - o.start
		want := min(int64(len(b)-n), o.size-at)
		opts := minio.GetObjectOptions{VersionID: o.version}
		if err := opts.SetRange(at, at+want-1); err != nil {
			return n, err
		}
		t0 := time.Now()
		body, _, _, err := r.p.core.GetObject(ctx, r.p.cfg.Bucket, o.key, opts)
		if err != nil {
			err = r.p.storeErr(err)
			r.noteRead(ctx, err)
			return n, fmt.Errorf("s3 pool %q: read %s at %d: %w", r.p.cfg.Pool, o.key, at, err)
		}
		k, err := io.ReadFull(body, b[n:n+int(want)])
		body.Close()
		n += k
		err = r.p.storeErr(err)
		r.noteRead(ctx, err)
		r.p.stats.read(int64(k), time.Since(t0))
		if err != nil {
			return n, fmt.Errorf("s3 pool %q: read %s at %d: %w", r.p.cfg.Pool, o.key, at, err)
		}
		i++
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// noteRead counts a read's outcome in the pool's figures, but not a read
// its caller canceled (a read ahead that Close stopped): that says
// nothing of the store.
func (r *Reader) noteRead(ctx context.Context, err error) {
	if err != nil && ctx.Err() != nil {
		return
	}
	r.p.stats.note(err, time.Now())
}

// Close stops the reads ahead, if any, and waits for them.
func (r *Reader) Close() error {
	if r.ahead != nil {
		r.ahead.Close()
	}
	return nil
}

// Appender is a volume open for appending one session part after
// another, each part one object. It implements volume.Appender.
type Appender struct {
	pool   *Pool
	name   string
	prefix string
	ctx    context.Context
	label  volume.Label
	lock   Lock
	labelO object

	gen uint32 // of the last object begun

	// The object being written: it starts at objStart; uploaded bytes
	// went up in parts of the multipart upload uploadID, buf holds the
	// rest.
	objStart int64
	uploadID string
	key      string
	parts    []minio.CompletePart
	uploaded int64
	buf      []byte
	// written are the objects this Appender completed, for a rollback.
	written []object
	// TornBytes is what OpenAppend found past the committed end: parts
	// that never committed (deleted, or left for being locked).
	TornBytes int64
	// TornLocked is what of TornBytes the store kept locked.
	TornLocked int64
}

var (
	_ volume.Appender    = (*Appender)(nil)
	_ volume.PartAligner = (*Appender)(nil)
)

// OpenAppend opens volume name, which the catalog says is volume id with
// committedEnd bytes committed, for appending at committedEnd; the
// objects it writes are locked with lock. Objects at or past
// committedEnd (parts that never committed) are deleted where the store
// lets them, and uploads never completed are aborted. ctx bounds every
// operation of the Appender.
func (p *Pool) OpenAppend(ctx context.Context, name string, id uuid.UUID, committedEnd int64, lock Lock) (*Appender, error) {
	prefix, err := p.Prefix(name)
	if err != nil {
		return nil, err
	}
	objs, err := p.list(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("s3 pool %q: open volume %s for appending: %w", p.cfg.Pool, name, err)
	}
	ch, maxGen := chain(objs)
	if len(ch) == 0 {
		return nil, fmt.Errorf("s3 pool %q: open volume %s for appending: %w under %s in bucket %s", p.cfg.Pool, name, ErrNoVolume, prefix, p.cfg.Bucket)
	}
	r := &Reader{p: p, ctx: ctx, objs: ch, size: ch[len(ch)-1].end()}
	l, err := volume.ReadLabel(r)
	if err != nil {
		return nil, fmt.Errorf("s3 pool %q: volume %s: %w", p.cfg.Pool, name, err)
	}
	if l.VolumeID != id {
		return nil, fmt.Errorf("s3 pool %q: volume %s holds volume %s, catalog expects %s: %w", p.cfg.Pool, name, l.VolumeID, id, ErrWrongVolume)
	}
	if pa := int64(l.PartAlignment()); committedEnd < int64(l.BlockSize) || committedEnd%pa != 0 {
		return nil, fmt.Errorf("s3 pool %q: volume %s: committed end %d is not a multiple of the part alignment %d past the label", p.cfg.Pool, name, committedEnd, pa)
	}
	boundary := false
	for _, o := range ch {
		if o.end() == committedEnd {
			boundary = true
		}
	}
	if !boundary {
		return nil, fmt.Errorf("s3 pool %q: volume %s in bucket %s: its objects end at %d and no object ends at %d, the catalog's committed end: mark the volume damaged and check the store: %w", p.cfg.Pool, name, p.cfg.Bucket, r.size, committedEnd, ErrMissingData)
	}
	a := &Appender{pool: p, name: name, prefix: prefix, ctx: ctx, label: l, lock: lock, labelO: ch[0], gen: maxGen, objStart: committedEnd}
	for _, o := range objs {
		if o.start < committedEnd {
			continue
		}
		a.TornBytes += o.size
		if err := p.remove(ctx, o); err != nil {
			if !errors.Is(err, ErrLocked) {
				return nil, fmt.Errorf("s3 pool %q: volume %s: delete %s, a part past the committed end: %w", p.cfg.Pool, name, o.key, err)
			}
			a.TornLocked += o.size
		}
	}
	p.abortUploads(ctx, prefix)
	return a, nil
}

// remove deletes one version of an object; a lock is ErrLocked.
func (p *Pool) remove(ctx context.Context, o object) error {
	err := p.c.RemoveObject(ctx, p.cfg.Bucket, o.key, minio.RemoveObjectOptions{VersionID: o.version})
	if err == nil {
		return nil
	}
	if r := minio.ToErrorResponse(err); r.Code == "AccessDenied" || r.Code == "InvalidRequest" || r.StatusCode == http.StatusForbidden {
		if ret, rerr := p.retention(ctx, o.key, o.version); rerr == nil && (ret.Until.After(time.Now()) || ret.LegalHold) {
			return fmt.Errorf("%s (locked until %s): %w", o.key, ret.Until.Format(time.RFC3339), ErrLocked)
		}
	}
	return p.storeErr(err)
}

// abortUploads aborts every upload under prefix never completed: a
// session that failed with the store away. Best effort: what stays is no
// object, and the next open tries again.
func (p *Pool) abortUploads(ctx context.Context, prefix string) {
	res, err := p.core.ListMultipartUploads(ctx, p.cfg.Bucket, prefix, "", "", "", 1000)
	if err != nil {
		return
	}
	for _, u := range res.Uploads {
		_ = p.core.AbortMultipartUpload(ctx, p.cfg.Bucket, u.Key, u.UploadID)
	}
}

func (a *Appender) VolumeID() uuid.UUID { return a.label.VolumeID }
func (a *Appender) BlockSize() int      { return a.label.BlockSize }
func (a *Appender) Label() volume.Label { return a.label }
func (a *Appender) Name() string        { return a.name }
func (a *Appender) Offset() int64       { return a.objStart + a.uploaded + int64(len(a.buf)) }

// PartAlign makes the session writer start parts on the volume's part
// alignment (volume.PartAligner): a page in format 2.
func (a *Appender) PartAlign() int { return a.label.PartAlignment() }

func (a *Appender) Remaining() int64 {
	if a.pool.cfg.MaxVolumeBytes == 0 {
		return math.MaxInt64 - a.Offset()
	}
	return max(0, a.pool.cfg.MaxVolumeBytes-a.Offset())
}

// Write appends p to the object being written, uploading a part each
// time PartSize bytes are buffered.
func (a *Appender) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		room := int(a.pool.cfg.PartSize) - len(a.buf)
		k := min(room, len(p))
		a.buf = append(a.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(a.buf) == int(a.pool.cfg.PartSize) {
			if err := a.uploadPart(); err != nil {
				a.buf = a.buf[:len(a.buf)-k]
				return n - k, err
			}
		}
	}
	return n, nil
}

func (a *Appender) uploadPart() error {
	if a.uploadID == "" {
		a.gen++
		a.key = objectKey(a.prefix, a.objStart, a.gen)
		o := minio.PutObjectOptions{}
		a.pool.lockOpts(&o, a.lock)
		id, err := a.pool.core.NewMultipartUpload(a.ctx, a.pool.cfg.Bucket, a.key, o)
		a.pool.stats.note(a.pool.storeErr(err), time.Now())
		if err != nil {
			return fmt.Errorf("s3 pool %q: volume %s: begin the upload of %s: %w", a.pool.cfg.Pool, a.name, a.key, a.pool.storeErr(err))
		}
		a.uploadID = id
	}
	sum := md5.Sum(a.buf)
	t0 := time.Now()
	part, err := a.pool.core.PutObjectPart(a.ctx, a.pool.cfg.Bucket, a.key, a.uploadID, len(a.parts)+1,
		bytes.NewReader(a.buf), int64(len(a.buf)), minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(sum[:])})
	a.pool.stats.note(a.pool.storeErr(err), time.Now())
	if err != nil {
		return fmt.Errorf("s3 pool %q: write volume %s at offset %d: %w", a.pool.cfg.Pool, a.name, a.objStart+a.uploaded, a.pool.storeErr(err))
	}
	a.parts = append(a.parts, minio.CompletePart{PartNumber: part.PartNumber, ETag: part.ETag})
	a.pool.stats.wrote(int64(len(a.buf)), time.Since(t0))
	a.uploaded += int64(len(a.buf))
	a.buf = a.buf[:0]
	return nil
}

// Sync completes the object being written: from then on the store keeps
// it, locked, and the next Write begins another at Offset.
func (a *Appender) Sync() error {
	if a.uploadID == "" && len(a.buf) == 0 {
		return nil
	}
	size := a.uploaded + int64(len(a.buf))
	if a.uploadID == "" {
		a.gen++
		key := objectKey(a.prefix, a.objStart, a.gen)
		t0 := time.Now()
		info, err := a.pool.put(a.ctx, key, a.buf, a.lock)
		a.pool.stats.note(err, time.Now())
		if err == nil {
			a.pool.stats.wrote(size, time.Since(t0))
		}
		if err != nil {
			return fmt.Errorf("s3 pool %q: write volume %s at offset %d: %w", a.pool.cfg.Pool, a.name, a.objStart, err)
		}
		a.done(object{key: key, version: info.VersionID, start: a.objStart, gen: a.gen, size: size})
		return a.extendLabel()
	}
	if len(a.buf) > 0 {
		if err := a.uploadPart(); err != nil {
			return err
		}
	}
	t0 := time.Now()
	info, err := a.pool.core.CompleteMultipartUpload(a.ctx, a.pool.cfg.Bucket, a.key, a.uploadID, a.parts, minio.PutObjectOptions{})
	a.pool.stats.note(a.pool.storeErr(err), time.Now())
	if err == nil {
		a.pool.stats.wrote(0, time.Since(t0))
	}
	if err != nil {
		return fmt.Errorf("s3 pool %q: volume %s: complete the upload of %s: %w", a.pool.cfg.Pool, a.name, a.key, a.pool.storeErr(err))
	}
	a.done(object{key: a.key, version: info.VersionID, start: a.objStart, gen: a.gen, size: size})
	return a.extendLabel()
}

func (a *Appender) done(o object) {
	if o.version == "null" {
		o.version = ""
	}
	a.written = append(a.written, o)
	a.objStart = o.end()
	a.uploadID, a.key, a.parts, a.uploaded, a.buf = "", "", nil, 0, a.buf[:0]
}

// extendLabel makes the label object's lock last as long as the latest
// of the volume's parts: a volume read with no catalog needs its label.
// A lock is only ever extended.
func (a *Appender) extendLabel() error {
	if a.pool.cfg.LockMode == LockNone || a.lock.Until.IsZero() {
		return nil
	}
	r, err := a.pool.retention(a.ctx, a.labelO.key, a.labelO.version)
	if err != nil {
		return fmt.Errorf("s3 pool %q: volume %s: read the label's lock: %w", a.pool.cfg.Pool, a.name, err)
	}
	until := a.lock.Until.UTC().Truncate(time.Second).Add(time.Second)
	if !r.Until.Before(until) {
		return nil
	}
	mode := minio.Governance
	if a.pool.cfg.LockMode == LockCompliance {
		mode = minio.Compliance
	}
	err = a.pool.c.PutObjectRetention(a.ctx, a.pool.cfg.Bucket, a.labelO.key, minio.PutObjectRetentionOptions{Mode: &mode, RetainUntilDate: &until, VersionID: a.labelO.version})
	if err != nil {
		return fmt.Errorf("s3 pool %q: volume %s: extend the label's lock to %s: %w", a.pool.cfg.Pool, a.name, until.Format(time.RFC3339), a.pool.storeErr(err))
	}
	return nil
}

// Rollback undoes what this Appender wrote: the upload in progress is
// aborted, never completed, and the objects it completed are deleted
// where the store lets it. What stays (locked, or the store away) lies
// past the committed end, where the next OpenAppend deals with it.
func (a *Appender) Rollback() error {
	var errs []error
	if a.uploadID != "" {
		if err := a.pool.core.AbortMultipartUpload(context.WithoutCancel(a.ctx), a.pool.cfg.Bucket, a.key, a.uploadID); err != nil {
			errs = append(errs, fmt.Errorf("abort the upload of %s: %w", a.key, a.pool.storeErr(err)))
		}
	}
	for _, o := range a.written {
		if err := a.pool.remove(context.WithoutCancel(a.ctx), o); err != nil && !errors.Is(err, ErrLocked) {
			errs = append(errs, err)
		}
	}
	if len(a.written) > 0 {
		a.objStart = a.written[0].start
	}
	a.written, a.uploadID, a.key, a.parts, a.uploaded, a.buf = nil, "", "", nil, 0, a.buf[:0]
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("s3 pool %q: volume %s: roll back: %w", a.pool.cfg.Pool, a.name, err)
	}
	return nil
}

// Close releases the Appender; a write not synced is dropped, as its
// upload is never completed.
func (a *Appender) Close() error {
	if a.uploadID != "" {
		_ = a.pool.core.AbortMultipartUpload(context.WithoutCancel(a.ctx), a.pool.cfg.Bucket, a.key, a.uploadID)
		a.uploadID = ""
	}
	a.buf = nil
	return nil
}

// CheckLabel reads volume name's label and checks it names volume id:
// ErrNoVolume when the volume has no object, ErrWrongVolume when it holds
// another.
func (p *Pool) CheckLabel(ctx context.Context, name string, id uuid.UUID) error {
	r, err := p.OpenRead(ctx, name)
	if err != nil {
		return err
	}
	l, err := volume.ReadLabel(r)
	if err != nil {
		return fmt.Errorf("s3 pool %q: volume %s: %w", p.cfg.Pool, name, err)
	}
	if l.VolumeID != id {
		return fmt.Errorf("s3 pool %q: volume %s holds volume %s, catalog expects %s: %w", p.cfg.Pool, name, l.VolumeID, id, ErrWrongVolume)
	}
	return nil
}

// Delete removes every object of volume name (every version), for a
// volume the catalog no longer needs. A locked object is ErrLocked, and
// the volume stays whole but for what was deleted before it (objects
// are deleted from the last to the label).
func (p *Pool) Delete(ctx context.Context, name string) error {
	prefix, err := p.Prefix(name)
	if err != nil {
		return err
	}
	var vs []object
	for oi := range p.c.ListObjectsIter(ctx, p.cfg.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true, WithVersions: true}) {
		if oi.Err != nil {
			return fmt.Errorf("s3 pool %q: delete volume %s: %w", p.cfg.Pool, name, p.storeErr(oi.Err))
		}
		start, _, _ := parseKey(prefix, oi.Key)
		v := oi.VersionID
		if v == "null" {
			v = ""
		}
		vs = append(vs, object{key: oi.Key, version: v, start: start})
	}
	sort.SliceStable(vs, func(i, j int) bool { return vs[i].start > vs[j].start })
	for _, o := range vs {
		if err := p.remove(ctx, o); err != nil {
			return fmt.Errorf("s3 pool %q: delete volume %s: %w", p.cfg.Pool, name, err)
		}
	}
	return nil
}
