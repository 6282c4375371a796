//go:build !cairn_copybaseline

package storagenode

// copyBaseline, set by the build tag cairn_copybaseline, frames a restore's
// records as before the copies on its path were counted and cut: every
// record copied into a batch, the batch through the connection's write
// buffer. It exists so that bench/restore-copies.sh can measure both in
// one run; nothing else sets it.
const copyBaseline = false
