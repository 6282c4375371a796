package catalog

import (
	"encoding/json"
	"testing"
)

// A pool type answers what code needs to know of its medium; it is stored
// as the string it always was, and "" (a node from before tape pools) is
// disk.
func TestPoolTypeSaysWhatItsMediumDoes(t *testing.T) {
	for _, c := range []struct {
		in                                  string
		want                                PoolType
		ok, sequential, library, fileBacked bool
	}{
		{"disk", PoolTypeDisk, true, false, false, true},
		{"", PoolTypeDisk, true, false, false, true},
		{"tape", PoolTypeTape, true, true, true, false},
		{"sftp", PoolTypeSFTP, true, false, false, true},
		{"s3", PoolTypeS3, true, false, false, true},
		{"floppy", "floppy", false, false, false, false},
	} {
		typ, ok := ParsePoolType(c.in)
		if typ != c.want || ok != c.ok || typ.Sequential() != c.sequential || typ.HasLibrary() != c.library || typ.FileBacked() != c.fileBacked {
			t.Errorf("%q: %q, valid %v, sequential %v, library %v, file-backed %v", c.in, typ, ok, typ.Sequential(), typ.HasLibrary(), typ.FileBacked())
		}
	}
	var v Volume
	if err := json.Unmarshal([]byte(`{"name":"CRN001L9","media_type":"tape"}`), &v); err != nil || !v.MediaType.HasLibrary() {
		t.Fatalf("a stored tape volume reads back as %q: %v", v.MediaType, err)
	}
	if b, _ := json.Marshal(Pool{Name: "Weekly", Type: PoolTypeTape}); !json.Valid(b) || string(b[:32]) != `{"name":"Weekly","type":"tape","` {
		t.Fatalf("a tape pool is stored as %s", b)
	}
}
