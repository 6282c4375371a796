package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/natsd"
)

// received is every message type a role decodes from NATS: requests the
// servers, storage nodes and agents take, the heartbeats and progress the
// servers hear, and the replies and events the other side reads. A new
// message type belongs here, so the fuzzers below decode it.
var received = []messageType{
	// Admin requests (cairn.api.<op>) and their replies.
	typeOf[Empty](), typeOf[VolumeListReq](), typeOf[JobListReq](), typeOf[JobShowReq](), typeOf[JobCancelReq](),
	typeOf[BackupStartReq](), typeOf[BackupListReq](), typeOf[TreeListReq](), typeOf[RestoreStartReq](),
	typeOf[ClusterJoinReq](), typeOf[ClusterRemoveReq](), typeOf[LibraryStatusReq](), typeOf[LibraryMoveReq](),
	typeOf[MediaLabelReq](),
	typeOf[StatusResp](), typeOf[ClientListResp](), typeOf[PoolListResp](), typeOf[VolumeListResp](),
	typeOf[JobListResp](), typeOf[JobInfo](), typeOf[JobStarted](), typeOf[BackupListResp](), typeOf[TreeListResp](),
	typeOf[KeyExportResp](), typeOf[ClusterStatusResp](), typeOf[ServerStatus](), typeOf[LibraryStatusResp](),
	typeOf[LibraryMoveResp](), typeOf[MediaLabelResp](), typeOf[JobEvent](),
	// What storage nodes send the servers, and the answers.
	typeOf[NodeRegisterReq](), typeOf[NodeHeartbeat](), typeOf[VolumeAcquireReq](), typeOf[VolumeLabeled](),
	typeOf[KeyGetReq](), typeOf[SessionIndexReq](), typeOf[SessionCommitReq](), typeOf[SessionAbortReq](),
	typeOf[JobWaitingReq](), typeOf[TapeMoved](),
	typeOf[NodeRegisterResp](), typeOf[VolumeGrant](), typeOf[KeyGetResp](),
	// What agents send the servers, and the answers.
	typeOf[AgentRegisterReq](), typeOf[AgentHeartbeat](), typeOf[Progress](), typeOf[BaseTreeReq](),
	typeOf[RestorePlanReq](), typeOf[JobDoneReq](),
	typeOf[BaseTreeResp](), typeOf[RestorePlanResp](),
	// Orders the servers send storage nodes and agents, and the answers.
	typeOf[NodeStatus](), typeOf[LibraryStatus](), typeOf[TapeLabelOrder](), typeOf[TapeLabelResult](),
	typeOf[RunBackup](), typeOf[RunRestore](),
	// Added later, at the end so that the committed corpora's type
	// indexes keep their meaning: the answer to an agent's registration,
	// and the duplicate notice the servers send agents.
	typeOf[AgentRegisterResp](), typeOf[AgentDuplicate](),
	// The questions the servers ask an agent before they make a job.
	typeOf[CheckBackup](), typeOf[CheckRestore](),
	// volume.show and its answer.
	typeOf[VolumeShowReq](), typeOf[VolumeShowResp](),
	// The policy operations and their answers.
	typeOf[PolicyPutReq](), typeOf[PolicyApplyReq](), typeOf[PolicyApplyResp](), typeOf[PolicyNameReq](),
	typeOf[PolicyListResp](), typeOf[Policy](), typeOf[PolicyDeleteResp](), typeOf[PolicyPreviewReq](),
	typeOf[PolicyPreviewResp](),
	// A synthetic full: the admin's start and the order to the node.
	typeOf[BackupConsolidateReq](), typeOf[RunConsolidate](),
	// The order that makes a store's object locks the catalog's, and its answer.
	typeOf[ObjectLockOrder](), typeOf[ObjectLockResult](),
	// pool.set and its answer.
	typeOf[PoolSetReq](), typeOf[PoolSetResp](),
}

type messageType struct {
	name   string
	sample func() any // a value with every field set
	decode func(json.RawMessage) (any, error)
}

func typeOf[T any]() messageType {
	var zero T
	return messageType{
		name: reflect.TypeOf(zero).Name(),
		sample: func() any {
			v := reflect.New(reflect.TypeOf(zero)).Elem()
			fill(v, 0)
			return v.Interface()
		},
		decode: func(b json.RawMessage) (any, error) { return Decode[T](b) },
	}
}

// fill sets every field of v to something other than its zero value, so a
// seed carries every field name and the fuzzer starts from whole messages.
func fill(v reflect.Value, depth int) {
	switch v.Interface().(type) {
	case time.Time:
		v.Set(reflect.ValueOf(time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)))
		return
	case uuid.UUID:
		v.Set(reflect.ValueOf(uuid.MustParse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")))
		return
	case json.RawMessage:
		v.Set(reflect.ValueOf(json.RawMessage(`{"k":1}`)))
		return
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString("x1")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(1.5)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.Pointer:
		if depth < 4 {
			v.Set(reflect.New(v.Type().Elem()))
			fill(v.Elem(), depth+1)
		}
	case reflect.Slice:
		if depth < 4 {
			v.Set(reflect.MakeSlice(v.Type(), 1, 1))
			fill(v.Index(0), depth+1)
		}
	case reflect.Array:
		for i := 0; i < v.Len(); i++ {
			fill(v.Index(i), depth+1)
		}
	case reflect.Map:
		if depth < 4 {
			m := reflect.MakeMap(v.Type())
			k, e := reflect.New(v.Type().Key()).Elem(), reflect.New(v.Type().Elem()).Elem()
			fill(k, depth+1)
			fill(e, depth+1)
			m.SetMapIndex(k, e)
			v.Set(m)
		}
	}
}

// seedMessages adds every message type's sample, its zero value and an
// error reply as (type index, envelope) seeds.
func seedMessages(f *testing.F) {
	for i, mt := range received {
		for _, v := range []any{mt.sample(), nil} {
			b, err := Marshal(v)
			if err != nil {
				f.Fatalf("marshal %s: %v", mt.name, err)
			}
			f.Add(uint8(i), b)
		}
	}
	f.Add(uint8(0), MarshalError(Errorf(CodeNotFound, "", "backup 7 does not exist")))
	f.Add(uint8(0), []byte(`{"v":2,"body":{}}`))
	f.Add(uint8(0), []byte("\x00garbage"))
}

// FuzzUnmarshalDecode opens arbitrary bytes as an envelope and decodes the
// body as each message type a role receives. Whatever is refused is
// refused with a wire Error of a client-side code; whatever decodes
// encodes back to a body that decodes to the same value.
func FuzzUnmarshalDecode(f *testing.F) {
	seedMessages(f)
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		body, err := Unmarshal(data)
		if err != nil {
			var we *Error
			if !errors.As(err, &we) {
				t.Fatalf("Unmarshal error %T %v is not a wire Error", err, err)
			}
			return
		}
		mt := received[int(which)%len(received)]
		v, err := mt.decode(body)
		if err != nil {
			if CodeOf(err) != CodeBadRequest {
				t.Fatalf("decode %s: %v (code %q), want %s", mt.name, err, CodeOf(err), CodeBadRequest)
			}
			return
		}
		again, err := Marshal(v)
		if err != nil {
			// A value JSON cannot carry back (a time past year 9999)
			// must not reach here: the decoder accepted it.
			t.Fatalf("decoded %s %+v does not encode: %v", mt.name, v, err)
		}
		body2, err := Unmarshal(again)
		if err != nil {
			t.Fatal(err)
		}
		v2, err := mt.decode(body2)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", mt.name, err)
		}
		b1, _ := json.Marshal(v)
		b2, _ := json.Marshal(v2)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("%s does not survive a round trip:\n%s\n%s", mt.name, b1, b2)
		}
	})
}

// FuzzHandleMsg sends arbitrary bytes, over a real NATS server, to a
// router that serves every message type with Typed handlers through
// HandleMsg, as each role serves its subjects. Every request gets an
// answer: the decoded message echoed, or an error with a client-side
// code; never an internal error, which is what a recovered panic becomes.
func FuzzHandleMsg(f *testing.F) {
	seedMessages(f)
	nc := fuzzNATS(f)
	r := NewRouter()
	for _, mt := range received {
		mt := mt
		r.Handle(mt.name, func(_ context.Context, _ string, body json.RawMessage) (any, error) {
			return mt.decode(body)
		})
	}
	const prefix = "cairn.fuzz."
	ctx, cancel := context.WithCancel(context.Background())
	f.Cleanup(cancel)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sub, err := Serve(ctx, nc, prefix+">", "", logger, r.Dispatch(func(subject string) (string, bool) {
		return strings.CutPrefix(subject, prefix)
	}))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		op := "no.such.op"
		if int(which) < 2*len(received) {
			op = received[int(which)%len(received)].name
		}
		m, err := nc.Request(prefix+op, data, 10*time.Second)
		if err != nil {
			t.Fatalf("no answer to %q on %s: %v", data, op, err)
		}
		_, err = Unmarshal(m.Data)
		switch CodeOf(err) {
		case "", CodeBadRequest, CodeUnsupportedVersion, CodeUnknownOperation:
		default:
			if _, sent := Unmarshal(data); CodeOf(sent) == CodeOf(err) {
				return // an error reply sent as a request is only decoded
			}
			t.Fatalf("%s answered %q to %q", op, m.Data, data)
		}
	})
}

func fuzzNATS(f *testing.F) *nats.Conn {
	f.Helper()
	s, err := natsd.Start(natsd.Config{Anonymous: true}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.URL())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(nc.Close)
	return nc
}

// Marshal writes the envelope around the body by hand; what it writes is
// what encoding/json writes for the Envelope, for every message type, the
// empty one, and a body whose strings encoding/json escapes.
func TestMarshalWritesTheEnvelopeEncodingJSONWould(t *testing.T) {
	bodies := []any{nil, "<a>&\u2028\xff", RestorePlanResp{Reads: []ReadRequest{{Locs: []ReadLoc{{Path: "/srv/<caf\xe9>\u2029"}}}}}}
	for _, mt := range received {
		bodies = append(bodies, mt.sample())
	}
	for _, body := range bodies {
		got, err := Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		env := Envelope{V: Version}
		if body != nil {
			env.Body, _ = json.Marshal(body)
		}
		want, _ := json.Marshal(env)
		if !bytes.Equal(got, want) {
			t.Errorf("Marshal(%T) wrote\n%s\nencoding/json\n%s", body, got, want)
		}
	}
}
