package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/cairnbackup/cairn/fileindex"
)

func sampleCommands() []*Command {
	at := time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)
	bs, wj := int64(4096), uint64(7)
	vol := uuid.MustParse("6f1c2b9e-8f57-4a51-9d0b-3f4b7c2a1e10")
	return []*Command{
		{Op: OpRegisterClient, Time: at, Client: &Client{Name: "web1", Hostname: "h", OS: "linux", Arch: "arm64", Version: "1", DefaultPool: "p"}},
		{Op: OpRegisterNode, Time: at, Node: &StorageNode{ID: "sn1", DataAddr: "a:1", CertSHA256: "ab", Pools: []NodePool{{Name: "p", Dir: "/d", MaxVolumeBytes: 5}}}},
		{Op: OpCreatePool, Time: at, Pool: &Pool{Name: "p", Type: "disk", Nodes: []string{"sn1"}, BlockSize: 1, BlockRawSize: 2, LabelPrefix: "P", KeyID: "k", Compression: true}},
		{Op: OpPutKey, Time: at, Key: &Key{ID: "k", Pool: "p", Wrapped: []byte{0, 1, 2, 255}}},
		{Op: OpInitGroup, Time: at, Group: &Group{ID: "g", KEKFingerprint: "f", TicketKeys: [][]byte{bytes.Repeat([]byte{9}, 32)}}},
		{Op: OpCreateJob, Time: at, Job: &Job{Type: JobBackup, Client: "web1", Level: LevelDifferential, Pool: "p", Paths: []fileindex.Path{"/a", "/b"}, Excludes: []fileindex.Path{"*.tmp"}}},
		{Op: OpUpdateJob, Time: at, JobUpdate: &JobUpdate{ID: 3, State: JobRunning, Started: at, Files: 9, ErrorCode: "x", Error: "y"}},
		{Op: OpAppendJobLog, Time: at, JobLog: &JobLog{JobID: 3, Lines: []LogLine{{Time: at, Level: "info", Msg: "héllo\n"}}}},
		{Op: OpCreateVolume, Time: at, Volume: &Volume{ID: vol, Pool: "p", WriterJob: 3}},
		{Op: OpUpdateVolume, Time: at, VolumeUpdate: &VolumeUpdate{ID: vol, State: VolumeAppend, Bytes: &bs, WriterJob: &wj}},
		{Op: OpAddIndexSegment, Time: at, Segment: &IndexSegment{BackupID: 3, No: 2, First: "/a", Last: "/z", Count: 10, Data: bytes.Repeat([]byte{0, 0xff, '"'}, 1000)}},
		{Op: OpCommitBackup, Time: at, Commit: &BackupCommit{BackupID: 3, SessionID: vol, Segments: 3, Entries: 10, Parts: []Part{{VolumeID: vol, Part: 1, End: 99, Final: true}}, Full: []uuid.UUID{vol}, EndTime: at}},
		{Op: OpAbortBackup, Time: at, Abort: &BackupAbort{BackupID: 3, Code: "io_error", Msg: "disk on fire"}},
		{Op: OpDispatchJob, Time: at, Dispatch: &JobDispatch{JobID: 3, Node: "sn2"}},
		{Op: OpRequeueJob, Time: at, Requeue: &JobRequeue{JobID: 3, Reason: "node down"}},
		{Op: OpCancelJob, Time: at, Cancel: &JobCancel{JobID: 3, By: "alice (root@h)", Reason: "wrong paths"}},
		{Op: OpRotateSecrets, Time: at, Rotation: &SecretsRotation{FromKEK: "f", ToKEK: "g", Keys: []RewrappedKey{{ID: "k", Wrapped: []byte{3, 4}}}, TicketKey: bytes.Repeat([]byte{8}, 32)}},
		{Op: OpCreateJob, Time: at, Job: &Job{Type: JobRestore, Client: "web1", State: JobPending, BackupID: 3, Target: "/r"},
			Request: &RequestKey{ID: "5f0c8d0e-3b1a-4c2d-9e8f-0a1b2c3d4e5f", Digest: "ab12"}},
		{Op: OpAcceptJob, Time: at, Accept: &JobAccept{JobID: 4}},
		{Op: OpVoidJobs, Time: at, Void: &JobsVoid{JobIDs: []uint64{4, 5}, CreatedBefore: at, Reason: "not confirmed"}},
		{Op: OpForgetRequests, Time: at, Forget: &RequestsForget{Before: at}},
		{Op: OpRecordRuns, Time: at, Runs: &RunsRecord{Runs: []Run{{Policy: "nightly", Client: "web1", Scheduled: at, Asked: LevelIncremental,
			Level: LevelFull, Promotion: "promoted to full: no full of this fileset yet", State: RunStarting, Recorded: at, Updated: at}}}},
		{Op: OpUpdateRun, Time: at, RunUpdate: &RunUpdate{Key: RunKey{Policy: "nightly", Client: "web1", Scheduled: at}, State: RunDispatched, JobID: 3}},
		{Op: OpLabelTape, Time: at, TapeLabel: &TapeLabel{VolumeID: vol, Barcode: "CRN001L9", Library: "lib1", Pool: "Weekly", BlockSize: 65536},
			Request: &RequestKey{ID: "label-1/slot-3"}},
		{Op: OpPutPolicy, Time: at, PolicyPut: &PolicyPut{Mode: PutReplace, IfUpdated: at, Policy: Policy{
			Name: "web", Clients: []string{"web1"}, ClientLabels: map[string]string{"role": "web"}, Paths: []string{"/srv"},
			Excludes: []string{"*.tmp"}, OneFileSystem: true, Application: &Application{Before: []AppStep{{Command: "sync", Timeout: time.Minute, FailJob: true}}},
			Schedule: "daily 02:00", TimeZone: "Europe/Berlin", MaxFullAge: time.Hour, Pool: "p", LevelPools: map[Level]string{LevelFull: "t"},
			Priority: 3, RPO: 26 * time.Hour, Retention: PolicyRetention{All: KeepRules{Last: -1}, Levels: map[Level]KeepRules{LevelFull: {Monthly: 12}}},
			Created: at, Updated: at}}},
		{Op: OpDeletePolicy, Time: at, PolicyDelete: &PolicyDelete{Name: "web"}},
		{Op: OpApplyPolicies, Time: at, PolicyApply: &PolicyApply{Prune: true, Policies: []Policy{{Name: "db", Clients: []string{"db1"}, Paths: []string{"/var/lib/pg"},
			Schedule: "daily 03:00", Pool: "p", Retention: PolicyRetention{All: KeepRules{Daily: 7}}}}}},
		{Op: OpHold, Time: at, Hold: &Hold{Backup: 3, Reason: "case 4711", By: "alice"}},
		{Op: OpRelease, Time: at, Hold: &Hold{Client: "web1"}},
		{Op: OpExpireBackups, Time: at, Expire: &BackupsExpire{Backups: []ExpiringBackup{{ID: 3, Reason: "keep-last 2"}}, By: "expiry pass"}},
		{Op: OpExpireBackups, Time: at, Expire: &BackupsExpire{Backups: []ExpiringBackup{{ID: 3}, {ID: 4}}, By: "alice", Manual: true}},
		{Op: OpForgetVolume, Time: at, VolumeForget: &VolumeForget{VolumeID: vol}},
		{Op: OpRecycleTape, Time: at, TapeRecycle: &TapeRecycle{VolumeID: vol, WriterJob: 9}},
		{Op: OpSetPoolCompression, Time: at, PoolCompression: &PoolCompression{Pool: "p", Codec: "s2"}},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("%s: round trip\n got %+v\nwant %+v", c.Op, got, c)
		}
	}
}

func TestSegmentDataIsNotBase64(t *testing.T) {
	data := bytes.Repeat([]byte{0xfe}, 100000)
	b, err := EncodeCommand(&Command{Op: OpAddIndexSegment, Segment: &IndexSegment{BackupID: 1, First: "/a", Last: "/b", Count: 1, Data: data}})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > len(data)+300 {
		t.Fatalf("a %d-byte segment encodes to %d bytes", len(data), len(b))
	}
}

func TestDecodeCommandRejectsGarbage(t *testing.T) {
	good, _ := EncodeCommand(sampleCommands()[0])
	bad := map[string][]byte{
		"empty":          nil,
		"newer version":  append([]byte{2}, good[1:]...),
		"version 0":      append([]byte{0}, good[1:]...),
		"no length":      {1},
		"length too big": {1, 0xff, 0xff, 0xff, 0x7f},
		"truncated json": good[:len(good)-3],
		"not json":       append([]byte{1, 3}, "abc"...),
		"unknown op":     envelope(`{"op":"format_disk","client":{"name":"x"}}`, nil),
		"no payload":     envelope(`{"op":"register_client"}`, nil),
		"null payload":   envelope(`{"op":"register_client","client":null}`, nil),
		"blob for json":  envelope(`{"op":"register_client","client":{"name":"x"}}`, []byte{1}),
		"json array":     envelope(`[1,2]`, nil),
		// The length of a good command's JSON, padded with a zero group.
		"padded length": append([]byte{1, byte(len(goodJSON)) | 0x80, 0}, goodJSON...),
	}
	if _, err := DecodeCommand(envelope(goodJSON, nil)); err != nil {
		t.Fatalf("the padded case's command itself: %v", err)
	}
	for name, b := range bad {
		if c, err := DecodeCommand(b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: got %+v, %v; want ErrBadCommand", name, c, err)
		}
	}
	if _, err := EncodeCommand(&Command{Op: "nope"}); !errors.Is(err, ErrBadCommand) {
		t.Errorf("encode unknown op: %v", err)
	}
	if _, err := EncodeCommand(&Command{Op: OpPutKey}); !errors.Is(err, ErrBadCommand) {
		t.Errorf("encode without payload: %v", err)
	}
}

// goodJSON is a command's JSON part that decodes.
const goodJSON = `{"op":"register_client","client":{"name":"x"}}`

func envelope(js string, blob []byte) []byte {
	b := []byte{1, byte(len(js))}
	return append(append(b, js...), blob...)
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands() {
		b, _ := EncodeCommand(c)
		f.Add(b)
	}
	f.Add([]byte{1, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode and decode to the same command.
		b2, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", c, err)
		}
		c2, err := DecodeCommand(b2)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		// One round normalizes (an empty list becomes nil); after it the
		// encoding must be stable, or replicas could differ.
		b3, err := EncodeCommand(c2)
		if err != nil || !bytes.Equal(b2, b3) {
			t.Fatalf("re-encoding is not stable (%v):\n%q\n%q", err, b2, b3)
		}
	})
}

// TestDecodeErrorKeepsTheJSONError: a command that is not the JSON it
// should be is ErrBadCommand, and the decoder's error stays under it.
func TestDecodeErrorKeepsTheJSONError(t *testing.T) {
	_, err := DecodeCommand(envelope(`[1,2]`, nil))
	var te *json.UnmarshalTypeError
	if !errors.Is(err, ErrBadCommand) || !errors.As(err, &te) {
		t.Fatalf("decode a JSON array: %v, want ErrBadCommand wrapping a *json.UnmarshalTypeError", err)
	}
}
