package volume

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Values of PartHeader.Compression and PartHeader.Encryption.
const (
	CompressionZstd = "zstd"
	CompressionNone = "none"
	// CompressionS2 (format 5) compresses two to three times as fast as zstd
	// and stores more: about 35% of text where zstd stores 23%.
	CompressionS2 = "s2"
	EncryptionGCM = "aes-256-gcm"
)

// ErrUnknownCompression: a codec name this program does not know.
var ErrUnknownCompression = errors.New("unknown compression")

// CheckCompression checks a codec name as an administrator gives it: zstd,
// s2 or none.
func CheckCompression(s string) error {
	switch s {
	case CompressionZstd, CompressionS2, CompressionNone:
		return nil
	}
	return fmt.Errorf("%w %q: use zstd (the default: smallest), s2 (fastest, stores more) or none", ErrUnknownCompression, s)
}

// StatusComplete is the only PartEnd status v1 writes.
const StatusComplete = "complete"

// PartHeader opens a session part: the JSON payload of a PartHeader block.
type PartHeader struct {
	SessionID    uuid.UUID `json:"session_id"`
	Part         int       `json:"part"` // 0-based, one per volume the session spans
	JobID        uint64    `json:"job_id"`
	BackupID     uint64    `json:"backup_id"`
	Client       string    `json:"client"`
	Level        string    `json:"level"`
	Pool         string    `json:"pool"`
	Created      time.Time `json:"created"`
	KeyID        string    `json:"key_id"`
	KeyCheck     string    `json:"key_check"`
	Compression  string    `json:"compression"`
	Encryption   string    `json:"encryption"`
	BlockRawSize int       `json:"block_raw_size"`
	StreamStart  uint64    `json:"stream_start"`
	FirstSeq     uint64    `json:"first_seq"`
	// ParentBackup is the backup the session's backup builds on, 0 for a
	// full and in volumes written before it was kept: with BackupID, the
	// chain a reader with no catalog follows.
	ParentBackup uint64 `json:"parent_backup,omitempty"`
	// Chain is where the sessions of the chain the backup builds on lay
	// when it was written, on volumes other than this one, at most
	// MaxChainParts parts (the newest): what a reader with no catalog
	// names when one of them is not given.
	Chain []ChainPart `json:"chain,omitempty"`
	// PrevVolume is the volume of the session's part before this one
	// (uuid.Nil on part 0, and in volumes written before it was kept):
	// what a reader with no catalog names when that part is not given.
	PrevVolume uuid.UUID `json:"prev_volume,omitzero"`
}

// ChainPart is a part of a session of the chain a backup builds on, on
// its volume.
type ChainPart struct {
	Session uuid.UUID `json:"session"`
	Backup  uint64    `json:"backup"`
	Volume  uuid.UUID `json:"volume"`
	Name    string    `json:"name,omitempty"`
}

// MaxChainParts bounds PartHeader.Chain, so that a part header stays far
// below the 16 KiB of a control block (about 140 bytes a part) however
// long a chain grows.
const MaxChainParts = 64

// PartEnd closes a session part: the JSON payload of a PartEnd block.
// Entries, Files and ContentBytes count the session from its start up to
// the end of this part, so the final part's are the session's totals.
type PartEnd struct {
	SessionID uuid.UUID `json:"session_id"`
	Part      int       `json:"part"`
	Final     bool      `json:"final"` // false: the session continues on another volume
	FirstSeq  uint64    `json:"first_seq"`
	// LastSeq is the last data block of the part; meaningless when
	// DataBlocks is 0 (a final part that holds only the index).
	LastSeq          uint64 `json:"last_seq"`
	DataBlocks       uint64 `json:"data_blocks"`
	StreamEnd        uint64 `json:"stream_end"`
	IndexFirstSeq    uint64 `json:"index_first_seq"`
	IndexBlocks      uint64 `json:"index_blocks"`
	IndexStreamStart uint64 `json:"index_stream_start"`
	Entries          int64  `json:"entries"`
	Files            int64  `json:"files"`
	ContentBytes     int64  `json:"content_bytes"`
	Status           string `json:"status"`
}

// CheckKey tells whether key can read the session this part belongs to,
// before any data is read. It returns a *KeyError when it cannot.
func (h *PartHeader) CheckKey(key *Key) error {
	if key == nil {
		return &KeyError{KeyID: h.KeyID, SessionID: h.SessionID, Reason: "no key given"}
	}
	if err := key.validate(); err != nil {
		return &KeyError{KeyID: h.KeyID, SessionID: h.SessionID, Reason: err.Error()}
	}
	if h.KeyCheck == "" || KeyCheck(key) == h.KeyCheck {
		return nil
	}
	reason := fmt.Sprintf("key check mismatch: key %q is a different key", key.ID)
	if key.ID == h.KeyID {
		reason = "key check mismatch: the key file holds a different key under that id"
	}
	return &KeyError{KeyID: h.KeyID, SessionID: h.SessionID, Reason: reason}
}

func decodeJSON[T any](kind Kind, off int64, payload []byte) (T, error) {
	var v T
	if err := json.Unmarshal(payload, &v); err != nil {
		return v, fmt.Errorf("%s block at offset %d: %w: %w", kind, off, ErrBadHeader, err)
	}
	return v, nil
}
