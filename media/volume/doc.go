// Package volume is the on-media format every Cairn volume holds, on disk,
// SFTP or tape: a label, then session parts made of blocks, each block
// CRC-checked, compressed when it pays and encrypted with AES-256-GCM.
// FORMAT.md in this directory is the byte-level specification and the
// reasons for it; testdata/golden-v1.cvol and golden-v2.cvol are volumes
// that every version of this package must keep reading. The two formats
// differ only in where parts start: on block boundaries in format 1
// (tape, and disk volumes labeled before format 2), on the label's
// part_align (a 4 KiB page) in format 2, the disk volumes' format, so a
// small session costs what it holds. An Appender that is a PartAligner
// makes the writer use its alignment.
//
// Writing: a SessionWriter takes the records an agent sends (record.go),
// packs them into blocks, seals the blocks on worker goroutines and writes
// them in order through an Appender, the medium's side of the contract.
// When a volume is full it closes the part there and goes on, through
// WriterOptions.Next, on another volume. Close writes the session's file
// index as the trailer; only then is the session durable.
//
// Reading: OpenVolume and Volume.Parts list what a volume holds with no
// catalog and no key; ReadIndex reads a session's trailer, and
// ReadPartIndex falls back to rebuilding it from the data; a
// SessionReader reads the records of chosen entries (seeking to them),
// of all entries, or rebuilds the index of a session that has no trailer.
// Damage is reported block by block as *CorruptBlockError and reading
// goes on: past a damaged label or part header (OpenVolume, Parts and
// Volume.Damaged), a damaged trailer (ReadPartIndex rebuilds the index)
// or damaged data blocks. A read asked for entries accounts for each: one
// not passed on whole is named in a *LostEntriesError. A key that cannot
// read a session is a *KeyError. Nothing in this package writes to a
// volume it reads.
package volume
