package volume

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

// partEndReserve is the room a part keeps for its PartEnd block: the
// header and JSON of bounded numbers, well under 1 KiB.
const partEndReserve = HeaderSize + 1024

// volWriter lays finished blocks out on volumes: parts, PartHeaders,
// PartEnds, padding, and the move to the next volume. It is used by the
// writer goroutine while the session streams, then by Close.
type volWriter struct {
	w   *SessionWriter
	app Appender

	part         int    // number of the open part, or of the next one
	open         bool   // a PartHeader was written on app and its PartEnd not yet
	header       []byte // PartHeader block for the next part, encoded by fits
	volStart     int64
	dataStart    int64
	streamStart  uint64
	firstSeq     uint64
	dataBlocks   uint64
	lastData     uint64
	blocksInPart int64
	indexFirst   uint64
	indexBlocks  uint64
	indexStart   uint64
	counts       partCounts

	stream  uint64   // stream offset of the next data or index block
	nextSeq uint64   // first unused seq
	offsets []uint64 // stream offset of every block, by seq
	parts   []PartResult

	// On a RecoverableAppender: the blocks of the open part that are not
	// yet wholly durable, oldest first, and the session counts after the
	// last block before them.
	recent        []sentBlock
	durableCounts partCounts
}

// sentBlock is a block written to a RecoverableAppender and not yet known
// to be durable: what it takes to send it again.
type sentBlock struct {
	seq    uint64
	kind   Kind
	counts partCounts
	start  int64 // volume offset
	n      int
}

func (v *volWriter) sessionErr(format string, args ...any) error {
	return fmt.Errorf("session %s: %s", v.w.info.SessionID, fmt.Sprintf(format, args...))
}

// fits reports whether n more bytes of blocks, the PartHeader if the part
// is not open yet, and the PartEnd with its padding fit the volume.
func (v *volWriter) fits(n int64) (bool, error) {
	off := v.app.Offset()
	extra := int64(0)
	if !v.open {
		h, err := v.partHeader()
		if err != nil {
			return false, err
		}
		extra = int64(len(h))
	}
	end := alignUp(off+extra+n+partEndReserve, PartAlignOf(v.app))
	return end-off <= v.app.Remaining(), nil
}

// room makes sure n bytes of blocks fit, closing the part and moving to
// the next volume when they do not.
func (v *volWriter) room(n int64) error {
	ok, err := v.fits(n)
	if err != nil || ok {
		return err
	}
	full := v.app
	if v.open {
		if err := v.closePart(false); err != nil {
			if !v.recoverable(err) {
				return err
			}
			// The medium failed under the PartEnd: the rest goes to the
			// next volume, which recover asks for.
			if err := v.recover(err, v.nextSeq); err != nil {
				return err
			}
			return v.room(n)
		}
	}
	if v.w.opts.Next == nil {
		return fmt.Errorf("session %s: volume %s at offset %d has no room for %d more bytes and there is no next volume: %w", v.w.info.SessionID, full.VolumeID(), full.Offset(), n, ErrVolumeFull)
	}
	next, err := v.w.opts.Next(full)
	if err != nil {
		return fmt.Errorf("session %s: next volume after %s: %w", v.w.info.SessionID, full.VolumeID(), err)
	}
	if next == nil {
		return v.sessionErr("next volume after %s: Next returned no volume", full.VolumeID())
	}
	v.app = next
	v.w.sealFor(next)
	v.header = nil
	if ok, err := v.fits(n); err != nil || !ok {
		if err != nil {
			return err
		}
		return fmt.Errorf("session %s: volume %s at offset %d has %d bytes left, too few for %d bytes of blocks and a part's header and end: %w", v.w.info.SessionID, next.VolumeID(), next.Offset(), next.Remaining(), n, ErrVolumeFull)
	}
	return nil
}

func (v *volWriter) write(p []byte) error {
	off := v.app.Offset()
	n, err := v.app.Write(p)
	v.w.stored.Add(int64(n))
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("session %s: write volume %s at offset %d: %w", v.w.info.SessionID, v.app.VolumeID(), off, err)
	}
	return nil
}

func (v *volWriter) partHeader() ([]byte, error) {
	if v.header != nil {
		return v.header, nil
	}
	info := v.w.info
	comp := codecOn(v.app, info.Compression)
	ph := PartHeader{
		SessionID: info.SessionID, Part: v.part, JobID: info.JobID, BackupID: info.BackupID, ParentBackup: info.ParentBackup,
		Chain:  chainElsewhere(info.Chain, v.app.VolumeID()),
		Client: info.Client, Level: info.Level, Pool: info.Pool, Created: info.Created,
		KeyID: v.w.key.ID, KeyCheck: KeyCheck(v.w.key), Compression: comp, Encryption: EncryptionGCM,
		BlockRawSize: info.BlockRawSize, StreamStart: v.stream, FirstSeq: v.nextSeq,
	}
	if n := len(v.parts); n > 0 && v.parts[n-1].Part == v.part-1 {
		ph.PrevVolume = v.parts[n-1].VolumeID
	}
	js, err := json.Marshal(ph)
	if err != nil {
		return nil, v.sessionErr("encode PartHeader: %v", err)
	}
	v.header, err = encodeControlBlock(KindPartHeader, v.app.VolumeID(), info.SessionID, v.nextSeq, js)
	if err != nil {
		return nil, v.sessionErr("%v", err)
	}
	return v.header, nil
}

func (v *volWriter) openPart() error {
	h, err := v.partHeader()
	if err != nil {
		return err
	}
	if pa := int64(PartAlignOf(v.app)); v.app.Offset()%pa != 0 {
		return v.sessionErr("volume %s: a part must start on a multiple of the part alignment %d, the volume is at offset %d", v.app.VolumeID(), pa, v.app.Offset())
	}
	v.volStart = v.app.Offset()
	if err := v.write(h); err != nil {
		return err
	}
	v.header = nil
	v.open = true
	v.dataStart = v.app.Offset()
	v.streamStart = v.stream
	v.firstSeq = v.nextSeq
	v.dataBlocks, v.lastData, v.blocksInPart = 0, 0, 0
	v.indexFirst, v.indexBlocks, v.indexStart = 0, 0, 0
	v.recent, v.durableCounts = v.recent[:0], v.counts
	return nil
}

// writeBlock writes one sealed data block, whose seq must be the next one.
// A medium error on a RecoverableAppender moves it, and the blocks before
// it that the medium lost, to the next volume.
func (v *volWriter) writeBlock(blk []byte, kind Kind, seq uint64, counts partCounts) error {
	return v.sendBlock(blk, kind, seq, counts, false)
}

// sendBlock is writeBlock for a block that may have gone, whole or in
// part, to a volume that failed (sent).
func (v *volWriter) sendBlock(blk []byte, kind Kind, seq uint64, counts partCounts, sent bool) error {
	for {
		err := v.putBlock(blk, kind, seq, counts, sent)
		if err == nil || !v.recoverable(err) {
			return err
		}
		if err := v.recover(err, seq); err != nil {
			return err
		}
		// The failed write may have put some of blk on the medium.
		sent = true
	}
}

// putBlock writes one sealed block, whose seq must be the next one. sent:
// the block may be on a failed medium already (sendBlock).
func (v *volWriter) putBlock(blk []byte, kind Kind, seq uint64, counts partCounts, sent bool) error {
	if seq != v.nextSeq {
		return v.sessionErr("internal error: block seq %d written when %d is next", seq, v.nextSeq)
	}
	if err := v.room(int64(len(blk))); err != nil {
		return err
	}
	if Flags(binary.BigEndian.Uint16(blk[6:8]))&FlagS2 != 0 && FormatOf(v.app) < FormatS2 {
		if sent {
			// Sealed again under the same session key and seq, its
			// nonce, the block would put two ciphertexts of different
			// plaintexts under one nonce on media: GCM's one rule.
			return v.sessionErr("block seq %d went to a volume that failed compressed with S2, and volume %s, the next, is of format %d, which holds no S2; sealing it again as zstd would reuse its nonce, so the session stops here: run the backup again (a new session, which writes zstd on that volume from its first block)",
				seq, v.app.VolumeID(), FormatOf(v.app))
		}
		var err error
		if blk, err = v.reseal(blk); err != nil {
			return err
		}
		if err := v.room(int64(len(blk))); err != nil {
			return err
		}
	}
	if !v.open {
		if err := v.openPart(); err != nil {
			return err
		}
	}
	// Workers seal for the volume current when they start; a block sealed
	// just before a volume change gets its header moved over here.
	if id := v.app.VolumeID(); [16]byte(blk[8:24]) != id {
		copy(blk[8:24], id[:])
		setCRC(blk)
	}
	start := v.app.Offset()
	if err := v.write(blk); err != nil {
		return err
	}
	if ra, ok := v.app.(RecoverableAppender); ok {
		v.recent = append(v.recent, sentBlock{seq: seq, kind: kind, counts: counts, start: start, n: len(blk)})
		durable := ra.Durable()
		i := 0
		for i < len(v.recent) && v.recent[i].start+int64(v.recent[i].n) <= durable {
			v.durableCounts = v.recent[i].counts
			i++
		}
		v.recent = append(v.recent[:0], v.recent[i:]...)
	}
	v.offsets = append(v.offsets, v.stream)
	v.stream += uint64(len(blk))
	v.nextSeq++
	v.blocksInPart++
	switch kind {
	case KindData:
		v.dataBlocks++
		v.lastData = seq
	case KindIndex:
		if v.indexBlocks == 0 {
			v.indexFirst, v.indexStart = seq, v.stream-uint64(len(blk))
		}
		v.indexBlocks++
	}
	v.counts = counts
	v.w.blocks.Add(1)
	return nil
}

// closePart writes the PartEnd, pads to the part alignment and syncs.
func (v *volWriter) closePart(final bool) error {
	pe := PartEnd{
		SessionID: v.w.info.SessionID, Part: v.part, Final: final,
		FirstSeq: v.firstSeq, LastSeq: v.lastData, DataBlocks: v.dataBlocks, StreamEnd: v.stream,
		IndexFirstSeq: v.indexFirst, IndexBlocks: v.indexBlocks, IndexStreamStart: v.indexStart,
		Entries: v.counts.entries, Files: v.counts.files, ContentBytes: v.counts.content,
		Status: StatusComplete,
	}
	if v.dataBlocks == 0 {
		pe.LastSeq = 0
	}
	js, err := json.Marshal(pe)
	if err != nil {
		return v.sessionErr("encode PartEnd: %v", err)
	}
	if len(js) > partEndReserve-HeaderSize {
		return v.sessionErr("internal error: PartEnd of %d bytes exceeds its reserve", len(js))
	}
	blk, err := encodeControlBlock(KindPartEnd, v.app.VolumeID(), v.w.info.SessionID, v.nextSeq, js)
	if err != nil {
		return v.sessionErr("%v", err)
	}
	if err := v.write(blk); err != nil {
		return err
	}
	off := v.app.Offset()
	if pad := alignUp(off, PartAlignOf(v.app)) - off; pad > 0 {
		if err := v.write(make([]byte, pad)); err != nil {
			return err
		}
	}
	if err := v.app.Sync(); err != nil {
		return fmt.Errorf("session %s: sync volume %s: %w", v.w.info.SessionID, v.app.VolumeID(), err)
	}
	r := PartResult{
		VolumeID: v.app.VolumeID(), Part: v.part, VolumeStart: v.volStart, DataStart: v.dataStart,
		End: v.app.Offset(), StreamStart: v.streamStart, StreamEnd: v.stream,
		FirstSeq: v.firstSeq, Blocks: v.blocksInPart, Final: final,
	}
	if v.blocksInPart > 0 {
		r.LastSeq = v.nextSeq - 1
	}
	v.parts = append(v.parts, r)
	v.part++
	v.open = false
	return nil
}

// writeIndex writes the trailer, all of it on the volume that holds the
// final part, then the final PartEnd. A medium error anywhere in it
// moves the whole trailer to the next volume (with the data blocks the
// medium lost), since FORMAT.md keeps the index in the final part.
func (v *volWriter) writeIndex(segs *segmentSpill, counts partCounts) error {
	first := v.nextSeq
	for {
		err := v.writeTrailer(segs, counts)
		if err == nil || !v.recoverable(err) {
			return err
		}
		if err := v.recover(err, first); err != nil {
			return err
		}
	}
}

// writeTrailer writes the segments as the spill file gives them, one at a
// time.
func (v *volWriter) writeTrailer(segs *segmentSpill, counts partCounts) error {
	n, bytes, largest := segs.sizes()
	if largest+gcmTag > maxPayload {
		return v.sessionErr("internal error: index segment of %d bytes exceeds a block", largest)
	}
	total := int64(n)*(HeaderSize+gcmTag) + bytes
	if err := v.room(total); err != nil {
		return err
	}
	if !v.open {
		if err := v.openPart(); err != nil {
			return err
		}
	}
	s, err := newSealer(v.w.key, v.w.info.SessionID, CompressionNone)
	if err != nil {
		return err
	}
	var buf []byte
	err = segs.each(0, func(_ int, seg fileindex.Segment) error {
		buf = s.seal(buf, BlockHeader{Kind: KindIndex, VolumeID: v.app.VolumeID(), SessionID: v.w.info.SessionID, Seq: v.nextSeq}, seg.Data)
		return v.putBlock(buf, KindIndex, v.nextSeq, counts, false)
	})
	if err != nil {
		return err
	}
	v.counts = counts
	return v.closePart(true)
}

// recoverable tells whether err is a medium error the writer moves on from.
func (v *volWriter) recoverable(err error) bool {
	_, ok := v.app.(RecoverableAppender)
	return ok && errors.Is(err, ErrMediumLost)
}

// reseal seals blk, an S2 block sealed for a volume of format 5, again
// with zstd, for an older volume the session went on to: what the programs
// that labeled that volume read. Only the few blocks sealed ahead of the
// move to it come here, never one written anywhere (putBlock): the new
// ciphertext takes the old one's nonce, which only one may ever use.
func (v *volWriter) reseal(blk []byte) ([]byte, error) {
	h, err := ParseBlockHeader(blk)
	if err != nil {
		return nil, v.sessionErr("internal error: reseal a block: %v", err)
	}
	o, err := newOpener(v.w.key, h.SessionID)
	if err != nil {
		return nil, v.sessionErr("reseal block seq %d: %v", h.Seq, err)
	}
	plain, err := o.open(nil, &h, bytes.Clone(blk))
	if err != nil {
		return nil, v.sessionErr("internal error: reseal block seq %d: %v", h.Seq, err)
	}
	s, err := newSealer(v.w.key, h.SessionID, CompressionZstd)
	if err != nil {
		return nil, v.sessionErr("reseal block seq %d: %v", h.Seq, err)
	}
	h.VolumeID = v.app.VolumeID()
	return s.seal(nil, h, plain), nil
}

// recover gives up the volume whose medium failed with cause: the open
// part there ends at its last block that is wholly durable (and before
// seq upto), the writer rolls back to the block after it, the blocks from
// there up to upto are read back and written again on the volume Next
// gives. The caller then writes upto and what follows. Its own errors do
// not wrap cause: the session fails there, it does not recover again.
func (v *volWriter) recover(cause error, upto uint64) error {
	lost := v.app
	ra := lost.(RecoverableAppender)
	durable := ra.Durable()
	i := 0
	for i < len(v.recent) && v.recent[i].seq < upto && v.recent[i].start+int64(v.recent[i].n) <= durable {
		i++
	}
	j := i
	for j < len(v.recent) && v.recent[j].seq < upto {
		j++
	}
	back := upto // first block not kept on the lost volume
	if i < j {
		back = v.recent[i].seq
	}
	counts := v.durableCounts
	if i > 0 {
		counts = v.recent[i-1].counts
	}
	type resend struct {
		b   sentBlock
		blk []byte
	}
	var again []resend
	for _, b := range v.recent[i:j] {
		blk := make([]byte, b.n)
		if err := ra.ReadBack(blk, b.start); err != nil {
			return fmt.Errorf("session %s: volume %s failed (%w) and block seq %d cannot be read back to write it again: %w", v.w.info.SessionID, lost.VolumeID(), cause, b.seq, err)
		}
		again = append(again, resend{b, blk})
	}
	streamAt := v.stream
	if back < uint64(len(v.offsets)) {
		streamAt = v.offsets[back]
	}
	if v.open {
		// The part's PartHeader went out; keep the part if any of its
		// blocks is on the medium. Its number is used either way.
		if kept := int64(back - v.firstSeq); kept > 0 && durable >= v.dataStart {
			v.parts = append(v.parts, PartResult{
				VolumeID: lost.VolumeID(), Part: v.part, VolumeStart: v.volStart, DataStart: v.dataStart,
				End: v.dataStart + int64(streamAt-v.streamStart), StreamStart: v.streamStart, StreamEnd: streamAt,
				FirstSeq: v.firstSeq, LastSeq: back - 1, Blocks: kept, Torn: true,
			})
		}
		v.part++
	}
	v.w.blocks.Add(-int64(v.nextSeq - back))
	v.offsets = v.offsets[:back]
	v.stream, v.nextSeq, v.counts = streamAt, back, counts
	v.open, v.header, v.recent = false, nil, v.recent[:0]
	if v.w.opts.Lost != nil {
		v.w.opts.Lost(lost, cause)
	}
	if v.w.opts.Next == nil {
		return fmt.Errorf("session %s: volume %s failed and there is no next volume to go on with: %w", v.w.info.SessionID, lost.VolumeID(), cause)
	}
	next, err := v.w.opts.Next(lost)
	if err != nil {
		return fmt.Errorf("session %s: volume %s failed (%w); next volume: %w", v.w.info.SessionID, lost.VolumeID(), cause, err)
	}
	if next == nil {
		return fmt.Errorf("session %s: volume %s failed (%w); Next returned no volume", v.w.info.SessionID, lost.VolumeID(), cause)
	}
	v.app = next
	v.w.sealFor(next)
	for _, r := range again {
		if err := v.sendBlock(r.blk, r.b.kind, r.b.seq, r.b.counts, true); err != nil {
			return err
		}
	}
	return nil
}

// chainElsewhere is what a part header on volume id records of its
// backup's chain: the parts on other volumes, the newest MaxChainParts. A
// reader given this volume holds the parts on it; so an hourly
// incremental of a quiet client, whose chain lies on its own volume,
// records nothing and still costs a page.
func chainElsewhere(chain []ChainPart, id uuid.UUID) []ChainPart {
	var out []ChainPart
	for _, c := range chain {
		if c.Volume != id {
			out = append(out, c)
		}
	}
	return out[max(0, len(out)-MaxChainParts):]
}
