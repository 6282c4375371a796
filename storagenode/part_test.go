package storagenode

import (
	"testing"

	"github.com/cairnbackup/cairn/internal/fieldcheck"
	"github.com/cairnbackup/cairn/media/volume"
)

// Every field of a part the session writer reports reaches the servers,
// Torn among them (the first copy of it dropped Torn).
func TestSessionPartCarriesEveryField(t *testing.T) {
	var p volume.PartResult
	fieldcheck.Fill(&p)
	if err := fieldcheck.Carried(p, sessionPart(p), "Blocks"); err != nil {
		t.Fatal(err)
	}
}
