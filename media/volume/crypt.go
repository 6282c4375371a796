package volume

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// KeySize is the size of a data key (AES-256).
const KeySize = 32

// Key is a data key: the pool's or client's key that encrypts the sessions
// written with it. ID is what the catalog and key files call it.
type Key struct {
	ID       string
	Material []byte
}

func (k *Key) validate() error {
	if k == nil {
		return errors.New("no data key")
	}
	if len(k.Material) != KeySize {
		return fmt.Errorf("data key %q has %d bytes, want %d", k.ID, len(k.Material), KeySize)
	}
	return nil
}

const (
	subkeyInfo   = "cairn volume v1 block key"
	keyCheckText = "cairn key check v1"
)

// KeyCheck returns the check value written in every PartHeader: the first 8
// bytes of HMAC-SHA256(key, "cairn key check v1"), hex. It tells a reader
// that it holds the wrong key before it reads any data, and reveals nothing
// useful about the key.
func KeyCheck(key *Key) string {
	m := hmac.New(sha256.New, key.Material)
	m.Write([]byte(keyCheckText))
	return hex.EncodeToString(m.Sum(nil)[:8])
}

// sessionAEAD derives the session's block key. A subkey per session means a
// nonce (the block's seq) repeats only if a session id does.
func sessionAEAD(key *Key, session uuid.UUID) (cipher.AEAD, error) {
	if err := key.validate(); err != nil {
		return nil, err
	}
	sub, err := hkdf.Key(sha256.New, key.Material, session[:], subkeyInfo, KeySize)
	if err != nil {
		return nil, fmt.Errorf("derive session key: %w", err)
	}
	block, err := aes.NewCipher(sub)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

const gcmTag = 16

func blockNonce(seq uint64) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// blockAAD binds a payload to its place: version, kind and flags (header
// bytes 4..7), session, seq and plaintext length. The volume id is left out
// so a session copied to another volume keeps its ciphertext.
func blockAAD(dst []byte, hdr []byte, session uuid.UUID, seq uint64, raw uint32) []byte {
	dst = append(dst, hdr[4:8]...)
	dst = append(dst, session[:]...)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return binary.BigEndian.AppendUint32(dst, raw)
}

// Compression is kept only when it saves more than this fraction: a block
// stored raw costs no CPU to read back.
const compressKeepRatio = 0.97

var (
	// zstdEncoders hold block compression's encoder states between the
	// blocks that use them: a sealer takes one for each block, so the
	// states in use are those compressing at the moment (about one per
	// core, however many sessions run), and an idle one goes with the
	// collector (a pool is emptied over two collections): a storage node
	// between backups, or `cairn dev` restoring after a backup, does not
	// keep a state per core alive (history, tables and buffers: a few MiB
	// each).
	zstdEncoders = sync.Pool{New: func() any {
		encodersMade.Add(1)
		// No zstd checksum: the block CRC and the GCM tag already cover
		// the payload.
		// A block is compressed on its own, so a window larger than the
		// block finds no more matches; it only costs memory: the
		// default's history buffers took 8 MiB per encoder state, 32 MiB
		// in all, the largest thing in the heap of a storage node. A
		// window of the default block size keeps that block's ratio;
		// larger blocks find matches up to 1 MiB back. Lower memory
		// sizes the history to the window and a block (1.1 MiB, not
		// 2 MiB, per state) and changes no output byte (the golden
		// volumes).
		e, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(DefaultBlockRawSize),
			zstd.WithLowerEncoderMem(true),
			zstd.WithEncoderCRC(false))
		if err != nil {
			panic(err)
		}
		return e
	}}
	// encodersMade counts the encoder states made, for the tests that
	// check they are reused while kept and not kept while idle.
	encodersMade atomic.Int64
	zstdDec      = sync.OnceValue(func() *zstd.Decoder {
		d, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)),
			zstd.WithDecoderMaxMemory(maxPayload),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			panic(err)
		}
		return d
	})
)

// sampleSize and sampleCount size the incompressibility probe: three 16 KiB
// slices (start, middle, end) cost about 5% of compressing a 1 MiB block
// and, on encrypted or already-compressed data, save the other 95%.
const (
	sampleSize  = 16 << 10
	sampleCount = 3
)

// probeCap holds the sample and its compression by either codec.
var probeCap = sampleSize*sampleCount + compressedCap(sampleSize*sampleCount)

// looksIncompressible compresses a sample of plain with codec and reports
// whether it did not shrink enough to be worth compressing the whole block.
func looksIncompressible(codec string, plain, scratch []byte, enc *zstd.Encoder) bool {
	if len(plain) < 4*sampleSize*sampleCount {
		return false
	}
	scratch = scratch[:0]
	step := (len(plain) - sampleSize) / (sampleCount - 1)
	for i := 0; i < sampleCount; i++ {
		scratch = append(scratch, plain[i*step:i*step+sampleSize]...)
	}
	out := compress(codec, scratch, scratch[len(scratch):], enc)
	return float64(len(out)) > compressKeepRatio*float64(len(scratch))
}

// compress appends plain compressed with codec (CompressionZstd, with
// enc, or CompressionS2) to dst[:0], in place when dst has the room
// (sealedCap).
func compress(codec string, plain, dst []byte, enc *zstd.Encoder) []byte {
	if codec == CompressionS2 {
		// The fastest S2 level: the codec is chosen for speed. Encode
		// writes into dst when its capacity is MaxEncodedLen, which
		// sealedCap leaves.
		return s2.Encode(dst[:0], plain)
	}
	return enc.EncodeAll(plain, dst[:0])
}

// codecFlag is the block flag of a payload compressed with codec.
func codecFlag(codec string) Flags {
	if codec == CompressionS2 {
		return FlagS2
	}
	return FlagZstd
}

// sealer turns a block's plaintext into a finished block. A sealer is used
// by one goroutine at a time.
type sealer struct {
	aead cipher.AEAD
	// codec compresses data blocks: CompressionZstd, CompressionS2, or
	// CompressionNone ("" too). The session writer sets it per block to
	// what the volume it seals for holds.
	codec string
	probe []byte
	aad   []byte
	// shrank: the last data block this sealer sealed compressed to at
	// most shrankRatio. The next one is most likely of the same file or
	// the same kind of files, and is compressed without the probe.
	shrank bool
}

// shrankRatio is how well a block must have compressed for the next one
// to skip the probe. The probe costs about 5% of compressing a block that
// compresses; skipped wrongly, before a block that does not, it costs the
// compression of that block, which zstd gives up on quickly (about as
// much CPU as 4% of one that compresses): a stream that turns from text
// to random bytes pays it once per sealer.
const shrankRatio = 0.75

func newSealer(key *Key, session uuid.UUID, codec string) (*sealer, error) {
	a, err := sessionAEAD(key, session)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: a, codec: codec}, nil
}

// sealedCap is the buffer size seal needs for a plaintext of n bytes: room
// for the worst case of either codec, so both compress in place.
func sealedCap(n int) int {
	return HeaderSize + compressedCap(n) + gcmTag
}

// compressedCap is room for n bytes compressed by either codec, however
// little they compress.
func compressedCap(n int) int { return max(n+n/64+1024, s2.MaxEncodedLen(n)) }

// seal appends the whole block (header, then payload) for plain to dst[:0]
// and returns it. h gives Kind, VolumeID, SessionID and Seq; seal sets the
// rest. Index blocks are never compressed: a segment is already zstd.
func (s *sealer) seal(dst []byte, h BlockHeader, plain []byte) []byte {
	if cap(dst) < sealedCap(len(plain)) {
		dst = make([]byte, 0, sealedCap(len(plain)))
	}
	dst = dst[:HeaderSize]
	h.Version = BlockVersion
	h.Flags = FlagAESGCM
	h.RawLen = uint32(len(plain))
	payload := plain
	if (s.codec == CompressionZstd || s.codec == CompressionS2) && h.Kind == KindData && len(plain) > 0 {
		if cap(s.probe) < probeCap {
			s.probe = make([]byte, 0, probeCap)
		}
		var enc *zstd.Encoder
		if s.codec == CompressionZstd {
			enc = zstdEncoders.Get().(*zstd.Encoder)
			defer zstdEncoders.Put(enc)
		}
		shrank := s.shrank
		s.shrank = false
		if shrank || !looksIncompressible(s.codec, plain, s.probe, enc) {
			c := compress(s.codec, plain, dst[HeaderSize:HeaderSize], enc)
			if float64(len(c)) <= compressKeepRatio*float64(len(plain)) {
				h.Flags |= codecFlag(s.codec)
				payload = c
			}
			s.shrank = float64(len(c)) <= shrankRatio*float64(len(plain))
		}
	}
	h.StoredLen = uint32(len(payload) + gcmTag)
	h.put(dst)
	s.aad = blockAAD(s.aad[:0], dst, h.SessionID, h.Seq, h.RawLen)
	// sealedCap leaves room for the payload and tag, so Seal writes into
	// dst: in place over the compressed bytes, or as a copy of plain.
	out := s.aead.Seal(dst[HeaderSize:HeaderSize], blockNonce(h.Seq), payload, s.aad)
	dst = dst[:HeaderSize+len(out)]
	setCRC(dst)
	return dst
}

// Reasons a block fails to open. errAuth with a good CRC means a wrong key
// or tampering; errCRC means the medium damaged it.
var (
	errCRC    = errors.New("CRC32C mismatch")
	errAuth   = errors.New("AES-GCM authentication failed")
	errDecode = errors.New("payload does not decode")
)

// opener is the reading counterpart of sealer.
type opener struct {
	aead cipher.AEAD
	aad  []byte
}

func newOpener(key *Key, session uuid.UUID) (*opener, error) {
	a, err := sessionAEAD(key, session)
	if err != nil {
		return nil, err
	}
	return &opener{aead: a}, nil
}

// open decrypts and decompresses block (header and payload, contiguous,
// CRC already verified) into dst[:0] and returns the plaintext. The
// payload bytes of block are overwritten.
func (o *opener) open(dst []byte, h *BlockHeader, block []byte) ([]byte, error) {
	out, inBlock, err := o.decode(dst, h, block)
	if inBlock {
		return append(dst[:0], out...), err
	}
	return out, err
}

// decode is open without the copy of a block stored uncompressed: its
// plaintext is decrypted in place and returned where it lies in block
// (inBlock), valid for as long as block is. A compressed block is
// decompressed into dst.
func (o *opener) decode(dst []byte, h *BlockHeader, block []byte) (out []byte, inBlock bool, err error) {
	p, err := o.decrypt(h, block)
	if err != nil {
		return nil, false, err
	}
	if h.Flags&(FlagZstd|FlagS2) == 0 {
		return p, true, nil
	}
	out, err = decompress(dst, h.Flags, h.RawLen, p)
	return out, false, err
}

// decrypt opens block's payload in place and returns it: the plaintext of
// a block stored uncompressed (its length checked), the compressed
// plaintext otherwise.
func (o *opener) decrypt(h *BlockHeader, block []byte) ([]byte, error) {
	hdr, payload := block[:HeaderSize], block[HeaderSize:]
	if h.Flags&FlagAESGCM == 0 {
		// v1 writers always encrypt; a plaintext data block is not ours.
		return nil, fmt.Errorf("%w: %s block is not encrypted", errDecode, h.Kind)
	}
	o.aad = blockAAD(o.aad[:0], hdr, h.SessionID, h.Seq, h.RawLen)
	p, err := o.aead.Open(payload[:0], blockNonce(h.Seq), payload, o.aad)
	if err != nil {
		return nil, errAuth
	}
	if h.Flags&(FlagZstd|FlagS2) == 0 && len(p) != int(h.RawLen) {
		return nil, fmt.Errorf("%w: %d plaintext bytes, header says %d", errDecode, len(p), h.RawLen)
	}
	return p, nil
}

// decompress decodes p, compressed as flags say (FlagZstd or FlagS2), into
// dst (grown when it has no room) and checks that it gives rawLen bytes.
func decompress(dst []byte, flags Flags, rawLen uint32, p []byte) (out []byte, err error) {
	if cap(dst) < int(rawLen) {
		dst = make([]byte, 0, rawLen)
	}
	if flags&FlagS2 != 0 {
		// The length S2 claims is checked first: Decode would allocate
		// whatever a crafted payload asks for.
		n, err := s2.DecodedLen(p)
		if err != nil {
			return nil, fmt.Errorf("%w: s2: %w", errDecode, err)
		}
		if n != int(rawLen) {
			return nil, fmt.Errorf("%w: s2 payload of %d plaintext bytes, header says %d", errDecode, n, rawLen)
		}
		if out, err = s2.Decode(dst[:rawLen], p); err != nil {
			return nil, fmt.Errorf("%w: s2: %w", errDecode, err)
		}
		return out, nil
	}
	out, err = zstdDec().DecodeAll(p, dst[:0:rawLen])
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %w", errDecode, err)
	}
	if len(out) != int(rawLen) {
		return nil, fmt.Errorf("%w: %d plaintext bytes, header says %d", errDecode, len(out), rawLen)
	}
	return out, nil
}

// Decompress decodes the payload of a stored block (StoredBlock) into dst,
// grown when it has no room: codec is FlagZstd or FlagS2, rawLen the
// plaintext's length, which the result must have. The bytes may come from
// another process: rawLen is bounded by MaxBlockRawSize and no decoder
// writes past it.
func Decompress(dst []byte, codec Flags, rawLen int, p []byte) ([]byte, error) {
	if codec != FlagZstd && codec != FlagS2 {
		return nil, fmt.Errorf("%w: stored block compressed with flags %#x, not zstd or s2", ErrBadRecord, uint16(codec))
	}
	if rawLen <= 0 || rawLen > MaxBlockRawSize {
		return nil, fmt.Errorf("%w: stored block of %d plaintext bytes, outside 1..%d", ErrBadRecord, rawLen, MaxBlockRawSize)
	}
	out, err := decompress(dst, codec, uint32(rawLen), p)
	if err != nil {
		return nil, fmt.Errorf("%w: stored block: %w", ErrBadRecord, err)
	}
	return out, nil
}
