// Package tape drives tape: the Drive contract (drive.go), the Linux
// driver over the st driver's non-rewinding node through mtio (Linux), a
// file-backed emulator that stands in for hardware in tests and in `cairn
// dev` (Emulator), and the volume format on tape: a volume.Appender
// (Appender) and an io.ReaderAt (Reader) over a Drive, with WriteLabel,
// ReadLabel and MapVolume. media/tape/tapetest is the Drive contract suite;
// both drives pass it. This package knows nothing of the catalog or the
// roles; the library (changer) and the storage node build on it.
//
// # Bounding calls
//
// Every Drive command takes a context and returns when the drive answers
// or the context ends. A deadline that passes gives a *HungError; the
// Linux driver's syscall may go on in the kernel, and the drive answers
// ErrBusy until it returns. Appender and Reader, whose methods take no
// context (io.ReaderAt, volume.Appender), bound each command by the
// context given when they were made plus their Timeout option
// (DefaultCommandTimeout, st's own 900 s, when zero).
//
// # A volume on tape
//
// FORMAT.md describes the volume as a byte stream; on tape it lies like
// this, in fixed block mode with records of the label's block size BS:
//
//	file 0: the label, exactly one record          then a file mark
//	file k: session part k-1 on this volume,       then a file mark
//	        all its records (its padding fills the last)
//	end of data after the last file mark
//
// Offsets and blocks. Volume byte o is in record o/BS. Its logical block
// (what Locate takes: records and file marks both count) is o/BS plus the
// file marks before it: one after the label and one after each part that
// ends at or before o. The part starts (every PartRef.VolumeStart on the
// volume, which the catalog has, or Layout.PartStarts from MapVolume) are
// all it takes to turn an offset into a (file, record) and a block. A
// Reader reads a session with one Locate to its part and sequential reads
// after it; a jump of less than ReadThrough bytes forward reads on instead
// of locating.
//
// Appending. The catalog records, per volume, the committed end and the
// number of parts. OpenAppender checks that the block before
// end/BS + 1 + parts is the file mark that closes the last part, and
// writes from the block after it. A tape cannot be cut short, but a write
// ends the data where it is: a part a crash left torn after the committed
// end (st closes it with a file mark when the device is closed) is
// overwritten by the next session, as the disk pool truncates its torn
// tail.
//
// Records and Sync. The session writer writes blocks of any length; the
// Appender sends whole records and keeps the rest in memory. The writer
// pads every part to BS and Syncs after its PartEnd, so Sync lands on a
// record boundary and writes the part's file mark, which is also the
// drive's flush (a file mark written without the immediate bit returns
// when the buffer is on tape). A Sync elsewhere (the writer never does
// that) writes the partial record padded with zeros and a mark; the next
// Write locates back and rewrites that record whole, dropping the mark.
// Between parts the Appender checks the tape position before writing, so
// a reader that used the drive in between does no harm.
//
// # Early warning and the session writer
//
// st reports no capacity left, only early warning, some distance before
// the physical end: a write reaches the warning point and succeeds, the
// next one fails with ENOSPC (ErrEarlyWarning) and writes nothing, and
// from then on writes go through until the physical end. The Appender
// turns that into the session writer's "volume full" path:
//
//   - Before early warning Remaining is unbounded (MaxInt64 - Offset):
//     nothing better is known, and the writer's room checks pass.
//   - On ErrEarlyWarning the Appender writes the same record again (it is
//     taken now) and from then on Remaining is 0.
//   - The writer checks, before each block, that the block, the PartEnd
//     and the padding fit in Remaining. With 0 the next block does not
//     fit: the writer closes the part (PartEnd and padding, which its
//     previous check covered and which the Appender takes whatever
//     Remaining says), Syncs (the file mark) and calls Next for another
//     volume. The zone then holds at most the rest of the block that met
//     the warning (up to 4 MiB + 64 KiB), the PartEnd (about 1 KiB), the
//     padding (less than BS, at most 4 MiB) and a file mark; with the
//     default sizes about 1.3 MiB. LTO early warning zones are far larger.
//   - The trailer is the exception. The writer checks room for the whole
//     trailer before its first Index block, then again before each one;
//     if Remaining fell to 0 in the middle, it would close the part there
//     and put the rest of the index on the next volume, a split trailer
//     that FORMAT.md does not allow (the index lives in the final part).
//     So while the last block written is an Index block, Remaining stays
//     unbounded: the trailer it started finishes in the zone, then the
//     PartEnd and the mark. A trailer whose rest does not fit the zone
//     meets the physical end: an *EndOfMediumError (errors.Is
//     syscall.ENOSPC), the session fails and the volume keeps what was
//     committed before it.
//   - A volume already in the zone: OpenAppender starts with Remaining 0
//     when the drive's status says early warning (the emulator does; st
//     only knows after a write), so the writer goes to Next at once;
//     otherwise the first part there gets a block or two before the
//     warning comes.
//   - A tape that ends with no warning (damaged, or shorter than it
//     claims) gives *EndOfMediumError from Write: the session fails.
//
// # Medium errors
//
// A record the drive cannot read fails the read with a *MediumError naming
// the block. With ReaderOptions.OnMediumError the Reader reports it once
// and serves the record as zeros; the volume format's CRCs then name the
// damaged blocks and the files they hurt, and reading goes on after them.
//
// A record the drive cannot write fails the Write with a *MediumError,
// which the Appender reports as volume.ErrMediumLost: the record that
// failed and everything after it are not on the tape, and the tape takes
// nothing more. The Appender is a volume.RecoverableAppender: Durable says
// up to which volume offset the drive took every record, and ReadBack
// gives the session writer the blocks it sent past that point, which it
// writes again on the next tape. The part on the bad tape ends at its last
// durable block (no PartEnd, no file mark after it; FORMAT.md's torn
// part), so what the session wrote there before the error still restores,
// and the storage node reports the tape bad to the catalog.
//
// # The emulator
//
// An Emulator is one drive; a cartridge is one file (cartridge.go: two
// meta slots holding the barcode, capacity, early warning zone, write
// protection and cartridge memory; then CRC-checked records and file
// marks; end of data where the last whole object ends). Loading never
// changes the tape part of the file: an object whose header is damaged
// reads as a medium error and the objects after it stay where they are,
// and what a crash left after the last whole object is replaced by the
// next write at end of data. It holds GiBs without reading them into
// memory: it keeps one offset per 256 objects and the file marks. Its
// timings follow a DriveProfile (LTO9: 400 MB/s, 10 s average locate;
// Fast: the same with mechanical times divided by 100) on
// a Clock: a VirtualClock makes them free in tests and still measured, the
// real clock makes `cairn dev` and benchmarks feel like a drive. Faults
// (medium error at a block, a hang, an early end of medium, a cleaning
// request, soft errors) are set with SetFaults; write protection is the
// cartridge's own (SetWriteProtect).
//
// # The stop model
//
// A real drive writes from a buffer, and its tape cannot stream slower
// than a minimum speed. When the host feeds it more slowly than that, the
// buffer runs dry, the tape stops past the last record, and before it can
// write again it must stop, rewind a little and accelerate (a reposition
// or backhitch, seconds each time). A drive fed this way ("shoe-shining")
// writes a fraction of its speed and wears heads and tape; spooling to
// disk first exists to prevent it. The emulator models it with three
// profile figures: BufferBytes, MinSpeed and Restart.
//
//   - Records go into the buffer. A tape at rest starts once the buffer
//     is half full; a tape that stopped on an empty buffer first spends
//     Restart repositioning (the host may go on filling the buffer).
//   - Speed matching keeps the buffer about half full: the tape takes data
//     at Speed while the buffer holds more than half, and at MinSpeed
//     below that. A host between MinSpeed and Speed is matched with no
//     stop; a host slower than MinSpeed drains the buffer, and when it is
//     empty the drive stops (EmulatorStats.Stops).
//   - A full buffer makes the host wait: a host faster than the drive
//     writes at Speed.
//   - A file mark, and any command that moves the tape, first writes out
//     what the buffer holds at Speed (after a reposition if the tape had
//     stopped): a file mark is the flush, and its time follows.
//
// LTO-9's figures are of the order data sheets give: 400 MB/s native,
// speed matching down to about a third of it (MinSpeed 133 MB/s), 2 s per
// restart. Its buffer is 256 MiB rather than the 1 GiB of a real drive, so
// that stops show in the few GiB tests and benchmarks write. The data
// itself goes to the cartridge file when written: the buffer is timing
// only, and what a crash leaves is what it was before. On a VirtualClock
// the host takes no time unless it sleeps on the clock, so only a test that
// does (or a drive that waits) sees a slow host.
package tape
