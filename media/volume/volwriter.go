package volume

import (
	"encoding/json"
	"fmt"
	"io"

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
	end := alignUp(off+extra+n+partEndReserve, v.app.BlockSize())
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
			return err
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
	id := next.VolumeID()
	v.w.curVol.Store(&id)
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
	comp := CompressionNone
	if info.Compression {
		comp = CompressionZstd
	}
	ph := PartHeader{
		SessionID: info.SessionID, Part: v.part, JobID: info.JobID, BackupID: info.BackupID,
		Client: info.Client, Level: info.Level, Pool: info.Pool, Created: info.Created,
		KeyID: v.w.key.ID, KeyCheck: KeyCheck(v.w.key), Compression: comp, Encryption: EncryptionGCM,
		BlockRawSize: info.BlockRawSize, StreamStart: v.stream, FirstSeq: v.nextSeq,
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
	if bs := int64(v.app.BlockSize()); v.app.Offset()%bs != 0 {
		return v.sessionErr("volume %s: a part must start on a multiple of the block size %d, the volume is at offset %d", v.app.VolumeID(), bs, v.app.Offset())
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
	return nil
}

// writeBlock writes one sealed data or index block, whose seq must be the
// next one.
func (v *volWriter) writeBlock(blk []byte, kind Kind, seq uint64, counts partCounts) error {
	if seq != v.nextSeq {
		return v.sessionErr("internal error: block seq %d written when %d is next", seq, v.nextSeq)
	}
	if err := v.room(int64(len(blk))); err != nil {
		return err
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
	if err := v.write(blk); err != nil {
		return err
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

// closePart writes the PartEnd, pads to the block size and syncs.
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
	if pad := alignUp(off, v.app.BlockSize()) - off; pad > 0 {
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
// final part, then the final PartEnd.
func (v *volWriter) writeIndex(segs []fileindex.Segment, counts partCounts) error {
	var total int64
	for _, s := range segs {
		total += HeaderSize + int64(len(s.Data)) + gcmTag
		if len(s.Data)+gcmTag > maxPayload {
			return v.sessionErr("internal error: index segment of %d bytes exceeds a block", len(s.Data))
		}
	}
	if err := v.room(total); err != nil {
		return err
	}
	if !v.open {
		if err := v.openPart(); err != nil {
			return err
		}
	}
	s, err := newSealer(v.w.key, v.w.info.SessionID, false)
	if err != nil {
		return err
	}
	var buf []byte
	for _, seg := range segs {
		buf = s.seal(buf, BlockHeader{Kind: KindIndex, VolumeID: v.app.VolumeID(), SessionID: v.w.info.SessionID, Seq: v.nextSeq}, seg.Data)
		if err := v.writeBlock(buf, KindIndex, v.nextSeq, counts); err != nil {
			return err
		}
	}
	v.counts = counts
	return v.closePart(true)
}
