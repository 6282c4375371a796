//go:build !cairn_copybaseline

package volume

// copyBaseline, set by the build tag cairn_copybaseline, reads blocks as
// before the copies on the restore path were counted and cut: through a
// buffered reader, and copying a block stored uncompressed out of its raw
// buffer. It exists so that bench/restore-copies.sh can measure both in
// one run; nothing else sets it.
const copyBaseline = false
