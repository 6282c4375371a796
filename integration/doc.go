// Package integration tests the cairn binary as an administrator runs it:
// `cairn server`, `cairn storagenode` and `cairn agent` as separate
// processes on loopback, one NATS server between them, and every action
// taken through the command line. The faults are real too: a flipped byte
// in a volume file, a wrong key, a full filesystem, a storage node killed
// with SIGKILL in the middle of a stream, garbage on the NATS subjects.
//
// The package holds only tests. TestMain builds the binary once; each test
// stands up its own system in its own temporary directory, on free ports,
// and stops every process it started.
package integration
