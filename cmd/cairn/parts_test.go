package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cairnbackup/cairn/wire"
)

// 'cairn job show' and 'cairn volume show' mark a part in which the
// medium failed.
func TestShowMarksATornPart(t *testing.T) {
	torn := wire.PartInfo{Volume: "CRN001L9", BackupID: 3, Client: "web", Part: 0, VolumeStart: 262144, End: 10485760, Torn: true}
	whole := wire.PartInfo{Volume: "CRN002L9", BackupID: 3, Client: "web", Part: 1, VolumeStart: 262144, End: 786432, Final: true}
	var job bytes.Buffer
	printJob(&job, &wire.JobInfo{ID: 3, Type: "backup", State: "success", Volumes: []string{"CRN001L9", "CRN002L9"}, Parts: []wire.PartInfo{torn, whole}})
	var vol bytes.Buffer
	printVolume(&vol, &wire.VolumeShowResp{Volume: wire.VolumeInfo{Name: "CRN001L9", MediaType: "tape", State: "error", Error: "medium error at block 40", Barcode: "CRN001L9"}, Parts: []wire.PartInfo{torn}})
	for name, out := range map[string]string{"job show": job.String(), "volume show": vol.String()} {
		found := false
		for _, l := range strings.Split(out, "\n") {
			// job show names the part's volume; volume show its backup.
			if (strings.HasPrefix(l, "CRN001L9 ") || strings.HasPrefix(l, "3 ")) && strings.Contains(l, "TORN") {
				found = true
			}
			if strings.HasPrefix(l, "CRN002L9 ") && strings.Contains(l, "TORN") {
				t.Errorf("%s marks a whole part torn: %q", name, l)
			}
		}
		if !found {
			t.Errorf("%s does not mark the torn part:\n%s", name, out)
		}
	}
	if !strings.Contains(vol.String(), "error: medium error at block 40") {
		t.Errorf("volume show does not say why the tape is in error:\n%s", vol.String())
	}
}
