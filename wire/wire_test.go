package wire

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/natsd"
)

func startNATS(t *testing.T) *nats.Conn {
	t.Helper()
	return startNATSWith(t, natsd.Config{Anonymous: true})
}

func startNATSWith(t *testing.T, cfg natsd.Config) *nats.Conn {
	t.Helper()
	s, err := natsd.Start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

type echoReq struct {
	Text string `json:"text"`
}

func TestServeAnswersGoodAndBadMessages(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	r := NewRouter()
	r.Handle("echo", Typed(func(ctx context.Context, _ string, req echoReq) (echoReq, error) {
		return req, nil
	}))
	r.Handle("fail", func(context.Context, string, json.RawMessage) (any, error) {
		return nil, Errorf(CodeNotFound, "", "job 7 does not exist")
	})
	r.Handle("panic", func(context.Context, string, json.RawMessage) (any, error) {
		var m map[string]int
		m["boom"]++
		return nil, nil
	})
	if _, err := Serve(ctx, nc, APIWildcard, ServerQueue, logger, r.Dispatch(TrimAPI)); err != nil {
		t.Fatal(err)
	}

	var got echoReq
	if err := Request(ctx, nc, APISubject("echo"), echoReq{Text: "hi"}, &got); err != nil || got.Text != "hi" {
		t.Fatalf("echo = %+v, %v", got, err)
	}

	err := Request(ctx, nc, APISubject("fail"), Empty{}, nil)
	var we *Error
	if !errors.As(err, &we) || we.Code != CodeNotFound || we.Hint == "" {
		t.Fatalf("fail = %#v", err)
	}
	if !errors.Is(err, &Error{Code: CodeNotFound}) {
		t.Fatal("errors.Is by code does not match")
	}

	for _, c := range []struct {
		subject string
		data    string
		code    string
	}{
		{APISubject("echo"), "{not json", CodeBadRequest},
		{APISubject("echo"), `{"v":99,"body":{}}`, CodeUnsupportedVersion},
		{APISubject("echo"), `{"v":1,"body":{"text":42}}`, CodeBadRequest},
		{APISubject("nosuch"), `{"v":1}`, CodeUnknownOperation},
		{APISubject("panic"), `{"v":1}`, CodeInternal},
	} {
		msg, err := nc.Request(c.subject, []byte(c.data), 5*time.Second)
		if err != nil {
			t.Fatalf("%s %s: %v", c.subject, c.data, err)
		}
		_, err = Unmarshal(msg.Data)
		if !errors.As(err, &we) || we.Code != c.code || we.Hint == "" {
			t.Fatalf("%s %q: reply error %#v, want code %s", c.subject, c.data, err, c.code)
		}
	}
	// The process survived the panic and still answers.
	if err := Request(ctx, nc, APISubject("echo"), echoReq{Text: "again"}, &got); err != nil {
		t.Fatal(err)
	}
}

func TestRequestWithoutResponder(t *testing.T) {
	nc := startNATS(t)
	err := Request(context.Background(), nc, APISubject("job.list"), Empty{}, nil)
	if CodeOf(err) != CodeUnavailable {
		t.Fatalf("err = %v, want %s", err, CodeUnavailable)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"web-01", "db_2", "A"} {
		if err := ValidateName("client", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a.b", "a b", "*", ">", "-x", string(make([]byte, 70))} {
		if err := ValidateName("client", bad); CodeOf(err) != CodeInvalidArgument {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSplitFrom(t *testing.T) {
	name, op, ok := SplitFrom(FromNodeSubject("sn1", OpVolumeAcquire))
	if !ok || name != "sn1" || op != OpVolumeAcquire {
		t.Fatalf("%q %q %v", name, op, ok)
	}
	name, op, ok = SplitFrom(FromAgentSubject("web", OpJobDone))
	if !ok || name != "web" || op != OpJobDone {
		t.Fatalf("%q %q %v", name, op, ok)
	}
	if _, _, ok := SplitFrom("cairn.srv.node.x"); ok {
		t.Fatal("accepted a subject without an operation")
	}
}

func TestAsErrorKeepsContext(t *testing.T) {
	base := Errorf(CodePoolFull, "", "disk pool Default is full")
	err := AsError(errors.Join(base))
	if err.Code != CodePoolFull || err.Hint == "" {
		t.Fatalf("%#v", err)
	}
	if AsError(errors.New("boom")).Code != CodeInternal {
		t.Fatal("plain error not internal")
	}
}

// An Error keeps the domain error it was made from: errors.Is and As see
// through Errorf's %w and through AsError, while the code still matches;
// the cause stays on this side of the wire.
func TestErrorUnwrapsToItsCause(t *testing.T) {
	domain := &fileindex.OrderError{Prev: "/b", Path: "/a"}
	sentinel := errors.New("tape is write-protected")
	for name, err := range map[string]error{
		"errorf":          Errorf(CodeBadRequest, "", "the agent sent entries out of order: %w", domain),
		"errorf two":      Errorf(CodeBadRequest, "", "%w (and %w)", domain, sentinel),
		"as error":        AsError(fmt.Errorf("job 3: %w", Errorf(CodeBadRequest, "", "stream: %w", domain))),
		"internal":        AsError(fmt.Errorf("job 3: %w", domain)),
		"wrapped at edge": fmt.Errorf("node sn1: %w", Errorf(CodeBadRequest, "", "%w", domain)),
	} {
		var oe *fileindex.OrderError
		if !errors.As(err, &oe) || oe != domain || !errors.Is(err, domain) {
			t.Errorf("%s: %v does not unwrap to the domain error", name, err)
		}
		if name == "errorf two" && !errors.Is(err, sentinel) {
			t.Errorf("%s: the second cause is lost", name)
		}
		want := CodeBadRequest
		if name == "internal" {
			want = CodeInternal
		}
		if CodeOf(err) != want || !errors.Is(err, &Error{Code: want}) {
			t.Errorf("%s: code %q, want %s", name, CodeOf(err), want)
		}
		data := MarshalError(AsError(err))
		if _, back := Unmarshal(data); CodeOf(back) != want || back.Error() != err.Error() || errors.Unwrap(back) != nil {
			t.Errorf("%s: over the wire: %v (%s)", name, back, data)
		}
	}
}

// The wire's own errors keep what they were made from: a message that is
// no JSON still says why to errors.As.
func TestWireErrorsKeepTheirCause(t *testing.T) {
	_, err := Unmarshal([]byte("{not json"))
	var se *json.SyntaxError
	if CodeOf(err) != CodeBadRequest || !errors.As(err, &se) {
		t.Fatalf("%#v", err)
	}
	_, err = Decode[struct{ N int }](json.RawMessage(`{"N":"x"}`))
	var te *json.UnmarshalTypeError
	if CodeOf(err) != CodeBadRequest || !errors.As(err, &te) {
		t.Fatalf("%#v", err)
	}
}

// A reply over max_payload used to be dropped with a warning, and the
// requester waited out its whole timeout to be told that no server was
// running. It gets CodeTooLarge at once now, and so does a request or a
// message that is too large to send.
func TestOversizeMessagesFailAtOnceWithACode(t *testing.T) {
	const limit = 4096
	nc := startNATSWith(t, natsd.Config{Anonymous: true, MaxPayload: limit})
	if nc.MaxPayload() != limit {
		t.Fatalf("max payload %d, want %d", nc.MaxPayload(), limit)
	}
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	var calls atomic.Int32
	r := NewRouter()
	r.Handle("big", Typed(func(_ context.Context, _ string, req echoReq) (echoReq, error) {
		calls.Add(1)
		return echoReq{Text: strings.Repeat("x", 2*limit)}, nil
	}))
	if _, err := Serve(context.Background(), nc, APIWildcard, ServerQueue, logger, r.Dispatch(TrimAPI)); err != nil {
		t.Fatal(err)
	}

	// The timeout is far longer than an answer takes, so an error that
	// only comes with it fails the test.
	const patience = 20 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	start := time.Now()
	err := Request(ctx, nc, APISubject("big"), echoReq{Text: "hi"}, nil)
	if took := time.Since(start); took > patience/4 {
		t.Fatalf("the oversize reply took %s to fail (%v)", took, err)
	}
	var we *Error
	if !errors.As(err, &we) || we.Code != CodeTooLarge || we.Hint == "" || !strings.Contains(we.Message, APISubject("big")) {
		t.Fatalf("oversize reply: %#v, want code %s with a hint, naming the subject", err, CodeTooLarge)
	}
	if !strings.Contains(logs.String(), "reply too large") {
		t.Fatalf("the oversize reply was not logged: %q", logs.String())
	}

	// An oversize request is refused before it is sent.
	err = Request(ctx, nc, APISubject("big"), echoReq{Text: strings.Repeat("y", 2*limit)}, nil)
	if !errors.As(err, &we) || we.Code != CodeTooLarge || we.Hint == "" || !strings.Contains(we.Message, "4096") {
		t.Fatalf("oversize request: %#v, want code %s naming the limit", err, CodeTooLarge)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("the handler ran %d times; the oversize request reached it", n)
	}
	if err := Publish(nc, APISubject("big"), echoReq{Text: strings.Repeat("z", 2*limit)}); CodeOf(err) != CodeTooLarge {
		t.Fatalf("oversize publish: %v, want code %s", err, CodeTooLarge)
	}
}

// The planner sizes its pages with EncodedLen; a size that is short of what
// encoding/json writes could let a page over the limit.
func TestEncodedLenIsExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"a", "/", " ", "\"", "\\", "<", ">", "&", "\n", "\t", "\b", "\f", "\r", "\x00", "\x1f", "\x7f",
		"é", "日", "😀", "\u2028", "\u2029", "\xff", "\xc3", "\xe6\x97", "\xed\xa0\x80"}
	check := func(l ReadLoc) {
		t.Helper()
		js, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.EncodedLen(); got != len(js) {
			t.Fatalf("EncodedLen of %q = %d, encoding/json writes %d: %s", l.Path, got, len(js), js)
		}
	}
	check(ReadLoc{})
	check(ReadLoc{Path: "/srv", Ancestor: true})
	check(ReadLoc{Path: "/srv/www/index.html", Loc: fileindex.Location{Seq: math.MaxUint64, Off: 10, InBlock: math.MaxUint32, EndSeq: 9}})
	check(ReadLoc{Path: "/var/db", Loc: fileindex.Location{Seq: 3, Len: 1 << 20}, Block: &BlockRead{At: []int64{0}}})
	check(ReadLoc{Path: "/var/db", Loc: fileindex.Location{Seq: 3, Len: math.MaxUint64}, Block: &BlockRead{At: []int64{1 << 40, 7, 0}}})
	for range 20000 {
		var b strings.Builder
		for range rng.IntN(40) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		check(ReadLoc{Path: fileindex.Path(b.String()), Loc: fileindex.Location{Seq: rng.Uint64() >> rng.IntN(64), Off: rng.Uint64() >> rng.IntN(64),
			InBlock: rng.Uint32() >> rng.IntN(32), EndSeq: rng.Uint64() >> rng.IntN(64)}, Ancestor: rng.IntN(2) == 0})
	}
}

func FuzzReadLocEncodedLen(f *testing.F) {
	f.Add("/srv/www/index.html", uint64(0), uint64(0))
	f.Add("/a/<b>&\"c\"\n\xff\u2028", uint64(1)<<63, uint64(99))
	f.Fuzz(func(t *testing.T, path string, seq, off uint64) {
		l := ReadLoc{Path: fileindex.Path(path), Loc: fileindex.Location{Seq: seq, Off: off, InBlock: uint32(seq), EndSeq: off ^ seq}, Ancestor: seq&1 == 1}
		js, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.EncodedLen(); got != len(js) {
			t.Fatalf("EncodedLen of %q = %d, encoding/json writes %d", path, got, len(js))
		}
	})
}

// An agent's report of a restore with a thousand warnings and a thousand
// damaged entries on 4,000-byte paths is 8 MB; it is trimmed to a message,
// keeping the first of each list and counting the rest.
func TestJobDoneReportFitsAMessage(t *testing.T) {
	long := strings.Repeat("d", 4000)
	var r JobDoneReq
	for i := range 1000 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s/%04d: cannot set owner", long, i))
		r.Damaged = append(r.Damaged, fmt.Sprintf("%s/%04d: block 7 damaged", long, i))
	}
	orig := r
	r.Fit(1 << 20)
	js, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(js) > 1<<20 {
		t.Fatalf("the report is %d bytes", len(js))
	}
	// The damaged entries matter more: warnings go first.
	if len(r.Warnings) != 1 || !strings.HasPrefix(r.Warnings[0], "... and 1000 more warnings") {
		t.Fatalf("warnings %d, first %.60q", len(r.Warnings), r.Warnings[0])
	}
	n := len(r.Damaged) - 1
	if n < 100 || !slices.Equal(r.Damaged[:n], orig.Damaged[:n]) || r.Damaged[n] != fmt.Sprintf("... and %d more damaged entries, left out to fit one message", 1000-n) {
		t.Fatalf("damaged: %d kept, last %q", n, r.Damaged[n])
	}
	small := JobDoneReq{Warnings: []string{"a"}, Damaged: []string{"b"}}
	small.Fit(1 << 20)
	if len(small.Warnings) != 1 || len(small.Damaged) != 1 {
		t.Fatalf("a report that fits was changed: %+v", small)
	}
}

// TestLeaderSubjectNamesTheGroup: a request forwarded to one group's leader
// is not another group's.
func TestLeaderSubjectNamesTheGroup(t *testing.T) {
	subj := LeaderSubject("g1", APISubject(OpJobList))
	if orig, ok := TrimLeader("g1", subj); !ok || orig != APISubject(OpJobList) {
		t.Fatalf("TrimLeader(g1, %s) = %q, %v", subj, orig, ok)
	}
	if _, ok := TrimLeader("g2", subj); ok {
		t.Fatalf("group g2's leader takes %s", subj)
	}
	if _, ok := TrimLeader("", subj); ok {
		t.Fatalf("a server of no group takes %s", subj)
	}
}

// TestRequestRetryAsksAgainWhenTheOutcomeIsUnknown: a role's report whose
// catalog change the servers could not confirm (a leader lost mid-commit)
// is sent again, and the repeat's answer is the outcome; a refusal is not.
func TestRequestRetryAsksAgainWhenTheOutcomeIsUnknown(t *testing.T) {
	nc := startNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	var commits, refusals atomic.Int32
	r := NewRouter()
	r.Handle("commit", func(context.Context, string, json.RawMessage) (any, error) {
		if commits.Add(1) < 3 {
			return nil, Errorf(CodeOutcomeUnknown, "", "catalog change of unknown outcome")
		}
		return Empty{}, nil
	})
	r.Handle("refused", func(context.Context, string, json.RawMessage) (any, error) {
		refusals.Add(1)
		return nil, Errorf(CodeInvalidArgument, "", "no")
	})
	if _, err := Serve(ctx, nc, APIWildcard, ServerQueue, logger, r.Dispatch(TrimAPI)); err != nil {
		t.Fatal(err)
	}
	if err := RequestRetry(ctx, nc, APISubject("commit"), Empty{}, nil, 5*time.Second); err != nil {
		t.Fatalf("a commit answered 'outcome unknown' twice, then done: %v", err)
	}
	if n := commits.Load(); n != 3 {
		t.Errorf("the commit was sent %d times, want 3", n)
	}
	if err := RequestRetry(ctx, nc, APISubject("refused"), Empty{}, nil, 5*time.Second); CodeOf(err) != CodeInvalidArgument {
		t.Errorf("a refusal: %v", err)
	}
	if n := refusals.Load(); n != 1 {
		t.Errorf("a refused request was sent %d times", n)
	}
}

// TestGroupSubjectNamesTheGroup: a request handed on to one group's
// servers is not another group's, and not a role-facing subject that every
// server answers.
func TestGroupSubjectNamesTheGroup(t *testing.T) {
	for _, orig := range []string{APISubject(OpJobList), FromNodeSubject("sn1", OpNodeRegister), FromAgentSubject("web", OpJobDone)} {
		subj := GroupSubject("g1", orig)
		if got, ok := TrimGroup("g1", subj); !ok || got != orig {
			t.Errorf("TrimGroup(g1, %s) = %q, %v", subj, got, ok)
		}
		if _, ok := TrimGroup("g2", subj); ok {
			t.Errorf("group g2's servers take %s", subj)
		}
		if _, ok := TrimGroup("", subj); ok {
			t.Errorf("a server of no group takes %s", subj)
		}
		if IsAPISubject(subj) {
			t.Errorf("%s is served as an admin subject", subj)
		}
		if _, _, ok := SplitFrom(subj); ok {
			t.Errorf("%s is served as a role's subject", subj)
		}
	}
}

// TestServeOrdersRefusesAnotherGroup: a storage node or agent that knows
// its group takes orders of its group and of no group (a server from
// before groups), and refuses, naming both groups, one from a server of
// another group, which may know a node or client of the same name; one
// that does not know its group yet takes every order.
func TestServeOrdersRefusesAnotherGroup(t *testing.T) {
	nc := startNATS(t)
	ctx := context.Background()
	var mine atomic.Value
	mine.Store("g1")
	var ran atomic.Int32
	var reqs Requests
	defer reqs.Close()
	sub, err := ServeOrders(ctx, nc, NodeSubject("sn1", ">"), "storage node", "sn1", slog.New(slog.NewTextHandler(io.Discard, nil)), &reqs,
		func() string { return mine.Load().(string) },
		func(context.Context, string, json.RawMessage) (any, error) { ran.Add(1); return Empty{}, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	order := NodeSubject("sn1", OpPing)
	for _, g := range []string{"g1", ""} {
		if err := RequestIn(ctx, nc, g, order, Empty{}, nil); err != nil {
			t.Fatalf("an order of group %q: %v", g, err)
		}
	}
	err = RequestIn(ctx, nc, "g2", order, Empty{}, nil)
	var we *Error
	if !errors.As(err, &we) || we.Code != CodeWrongGroup || !strings.Contains(we.Message, "belongs to group g1") || !strings.Contains(we.Message, "of group g2") {
		t.Fatalf("an order of another group: %v, want wrong_group naming g1 and g2", err)
	}
	if n := ran.Load(); n != 2 {
		t.Fatalf("%d orders ran, want 2", n)
	}
	mine.Store("")
	if err := RequestIn(ctx, nc, "g2", order, Empty{}, nil); err != nil {
		t.Fatalf("an order to a node that does not know its group yet: %v", err)
	}
}
