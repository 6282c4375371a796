package changer

import (
	"errors"
	"runtime"
	"testing"
)

// TestParseStatusBoundsHeaderCounts: the header's element counts come from
// the library's answer, through mtx. A parser that sized the inventory by
// them died of out of memory on one garbled header line.
func TestParseStatusBoundsHeaderCounts(t *testing.T) {
	for _, out := range []string{
		"  Storage Changer /dev/sg3:4000000000000 Drives, 1 Slots ( 0 Import/Export )\n",
		"  Storage Changer /dev/sg3:1 Drives, 900000000000 Slots ( 0 Import/Export )\n",
		"  Storage Changer /dev/sg3:1 Drives, 90000000000 Slots ( 90000000000 Import/Export )\n",
		"  Storage Changer /dev/sg3:5000000000000000000 Drives, 5000000000000000000 Slots ( 0 Import/Export )\n",
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := ParseStatus([]byte(out))
		runtime.ReadMemStats(&after)
		var se *StatusError
		if !errors.As(err, &se) || se.Line != 1 {
			t.Fatalf("ParseStatus(%q) = %v, want a StatusError at line 1", out, err)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Fatalf("a header of %d bytes made the parser allocate %d bytes", len(out), grew)
		}
	}
}
