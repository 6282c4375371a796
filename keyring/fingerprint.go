package keyring

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
)

// KEKFingerprint names a key-encryption key without revealing it: an HMAC
// of a fixed label under the key, so two servers can tell over NATS whether
// they hold the same KEK while neither sends it. 128 bits are plenty to
// tell keys apart and say nothing about the key.
func KEKFingerprint(kek []byte) string {
	m := hmac.New(sha256.New, kek)
	m.Write([]byte("cairn key-encryption key fingerprint v1"))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// TicketKeyFingerprint names a ticket signing key by its public key.
func TicketKeyFingerprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:16])
}
