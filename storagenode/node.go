package storagenode

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairnbackup/cairn/dataplane"
	"github.com/cairnbackup/cairn/internal/buildinfo"
	"github.com/cairnbackup/cairn/media/volume"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/storagenode/library"
	"github.com/cairnbackup/cairn/ticket"
	"github.com/cairnbackup/cairn/wire"
)

// Version is what the node registers with: the binary's, stamped at link
// time.
var Version = buildinfo.Version()

// Node is a running storage node.
type Node struct {
	cfg Config
	log *slog.Logger
	// media are the node's pools, in the order of its configuration
	// (disk pools, then tape pools), and byPool the same by name;
	// readers are what reads a restore's parts: the pools, and a reader
	// for each library no tape pool names. None changes once New made it.
	media   []medium
	byPool  map[string]medium
	readers []medium
	libs    map[string]*library.Manager
	guard   *ticket.Guard
	metrics *metrics

	ln         net.Listener // the data port, TCP; each connection takes tls
	tls        *tls.Config
	nc         *nats.Conn
	spoolLocks map[string]*os.File // by spool directory, held while the node runs
	// group is the group the node belongs to: Config.Group, or what its
	// first registration answered. Every request names it.
	group *wire.Group

	mu          sync.Mutex
	cert        tls.Certificate // the data port's, as last loaded (Reload)
	fingerprint string
	// ticketKeys are the group's ticket public keys, as the servers' catalog
	// records them, from the last registration; keysRefreshed is when a
	// ticket that did not verify last made the node ask again.
	ticketKeys    []ed25519.PublicKey
	keysRefreshed time.Time
	conns         map[net.Conn]struct{}
	jobs          map[uint64]*jobStream // the stream of each job running here
	// stopped is the newest attempt of each job the servers ordered
	// stopped: a stream of it (or of an older attempt) that connects
	// late, its agent's dial under way when the order came, is refused.
	stopped   map[uint64]stoppedAttempt
	refreshMu sync.Mutex // one refresh of the ticket keys at a time
	// draining: the node stops (Drain); drained is closed when its last
	// connection ends; handingBack: the drain ran out, and the sessions
	// cut off are handed back to the servers, not failed.
	draining    bool
	drained     chan struct{}
	handingBack bool

	cancel context.CancelFunc
	wg     sync.WaitGroup
	// orderRuns are the goroutines answering the servers' orders: Close
	// waits for them before it closes the libraries and NATS they use.
	orderRuns wire.Requests

	reportMu sync.Mutex
	reports  []func(context.Context) // to the servers, in order (reporter)
	reportCh chan struct{}

	orders orderMemo // library orders, once per request id
}

// New prepares a node: its pools, certificate and ticket record.
func New(cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("storage node config: %w", err)
	}
	logger = logger.With("component", "storagenode", "node", cfg.ID)
	if err := os.MkdirAll(filepath.Join(cfg.DataDir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("storage node data directory: %w", err)
	}
	n := &Node{cfg: cfg, log: logger, byPool: map[string]medium{}, conns: map[net.Conn]struct{}{}, jobs: map[uint64]*jobStream{}, stopped: map[uint64]stoppedAttempt{},
		libs: map[string]*library.Manager{}, reportCh: make(chan struct{}, 1), group: wire.NewGroup(cfg.Group)}
	if err := n.claimSpoolDirs(); err != nil {
		return nil, err
	}
	for _, p := range cfg.Pools {
		if err := os.MkdirAll(p.Dir, 0o700); err != nil {
			n.releaseSpoolDirs()
			return nil, fmt.Errorf("disk pool %s: %w", p.Name, err)
		}
		n.addMedium(p.Name, newDiskPool(p))
	}
	for _, p := range cfg.TapePools {
		n.addMedium(p.Name, newTapePool(n, p))
	}
	for _, p := range cfg.SFTPPools {
		m, err := newSFTPPool(p)
		if err != nil {
			n.releaseSpoolDirs()
			return nil, err
		}
		n.addMedium(p.Name, m)
	}
	for _, p := range cfg.S3Pools {
		m, err := newS3Pool(p)
		if err != nil {
			n.releaseSpoolDirs()
			return nil, err
		}
		n.addMedium(p.Name, m)
	}
	n.readers = append(n.readers, n.media...)
	for _, lc := range cfg.Libraries {
		if !slices.ContainsFunc(cfg.TapePools, func(p TapePoolConfig) bool { return p.Library == lc.Name }) {
			n.readers = append(n.readers, newTapePool(n, TapePoolConfig{Library: lc.Name}))
		}
	}
	cert, fp, err := dataplane.LoadOrCreateCert(cfg.DataDir, cfg.ID)
	if err != nil {
		n.releaseSpoolDirs()
		return nil, err
	}
	n.cert, n.fingerprint = cert, fp
	guard, err := ticket.OpenGuard(filepath.Join(cfg.DataDir, "tickets.db"))
	if err != nil {
		n.releaseSpoolDirs()
		return nil, err
	}
	n.guard = guard
	n.metrics = newMetrics(n, reg)
	return n, nil
}

// Start opens the data port, connects to NATS and registers with the
// servers. It returns once the data port listens; registration is retried in
// the background until a server answers.
func (n *Node) Start(ctx context.Context) error {
	tc := dataplane.ServerConfig(n.cert)
	tc.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		n.mu.Lock()
		defer n.mu.Unlock()
		return &n.cert, nil
	}
	ln, err := net.Listen("tcp", n.cfg.DataAddr)
	if err != nil {
		return fmt.Errorf("storage node data port %s: %w", n.cfg.DataAddr, err)
	}
	n.ln, n.tls = ln, tc
	nc, err := wire.Connect(n.cfg.NATSURL, "cairn-storagenode-"+n.cfg.ID, n.cfg.NATSAuth, wire.Inbox(wire.KindNode, n.cfg.ID), n.log)
	if err != nil {
		ln.Close()
		return err
	}
	n.nc = nc
	n.metrics.nats.Set(nc)
	ctx, n.cancel = context.WithCancel(ctx)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.reportLoop(ctx)
	}()
	for _, lc := range n.cfg.Libraries {
		m, err := library.Open(ctx, lc, reporter{n})
		if err != nil {
			n.closeLibraries()
			n.cancel()
			n.wg.Wait()
			nc.Close()
			ln.Close()
			return fmt.Errorf("library %s: %w", lc.Name, err)
		}
		n.libs[lc.Name] = m
	}
	if err := n.serveOrders(ctx); err != nil {
		n.closeLibraries()
		n.cancel()
		n.wg.Wait()
		nc.Close()
		ln.Close()
		return err
	}
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		n.acceptLoop(ctx)
	}()
	go func() {
		defer n.wg.Done()
		n.heartbeatLoop(ctx)
	}()
	n.log.Info("storage node started", "data_addr", n.DataAddr(), "pools", len(n.cfg.Pools), "tape_pools", len(n.cfg.TapePools), "libraries", len(n.libs))
	return nil
}

// serveOrders answers the servers' orders on cairn.node.<id>.>.
func (n *Node) serveOrders(ctx context.Context) error {
	r := wire.NewRouter()
	r.Handle(wire.OpPing, wire.Typed(func(context.Context, string, wire.Empty) (wire.Empty, error) { return wire.Empty{}, nil }))
	r.Handle(wire.OpCancel, wire.Typed(func(_ context.Context, _ string, o wire.CancelJob) (wire.CancelResult, error) {
		return n.cancelJob(o), nil
	}))
	r.Handle(wire.OpNodeStatus, wire.Typed(func(context.Context, string, wire.Empty) (wire.NodeStatus, error) {
		return wire.NodeStatus{ID: n.cfg.ID, Version: Version, DataAddr: n.DataAddr(), Streams: n.streams(), Pools: n.usage(), Draining: n.isDraining()}, nil
	}))
	r.Handle(wire.OpNodeLibraryStatus, wire.Typed(func(ctx context.Context, _ string, req wire.LibraryStatusReq) (wire.LibraryStatus, error) {
		m, err := n.library(req.Library)
		if err != nil {
			return wire.LibraryStatus{}, err
		}
		st, err := m.Status(ctx)
		st.Node = n.cfg.ID
		return st, orderError(err)
	}))
	r.Handle(wire.OpNodeLibraryMove, wire.Typed(func(ctx context.Context, _ string, req wire.LibraryMoveReq) (wire.LibraryMoveResp, error) {
		m, err := n.library(req.Library)
		if err != nil {
			return wire.LibraryMoveResp{}, err
		}
		params := req
		params.Start = wire.Start{}
		return remember(&n.orders, ctx, "move", req.RequestID, params, func() (wire.LibraryMoveResp, error) {
			resp, err := m.Move(ctx, req)
			return resp, orderError(err)
		})
	}))
	r.Handle(wire.OpRunConsolidate, wire.Typed(func(_ context.Context, _ string, o wire.RunConsolidate) (wire.Empty, error) {
		return n.runConsolidate(ctx, o) // the node's context: the job outlives the order's answer
	}))
	r.Handle(wire.OpNodeVolumeDelete, wire.Typed(func(ctx context.Context, _ string, o wire.VolumeDeleteOrder) (wire.Empty, error) {
		return wire.Empty{}, n.deleteVolume(ctx, o)
	}))
	r.Handle(wire.OpNodeObjectLocks, wire.Typed(n.relock))
	r.Handle(wire.OpNodeTapeLabel, wire.Typed(func(ctx context.Context, _ string, o wire.TapeLabelOrder) (wire.TapeLabelResult, error) {
		m, err := n.library(o.Library)
		if err != nil {
			return wire.TapeLabelResult{}, err
		}
		// The newest format, with parts on whole records: format 1's
		// layout, sessions whose large files hold blocks of earlier
		// sessions, and S2 blocks.
		l := volume.Label{FormatVersion: volume.FormatVersion, PartAlign: o.BlockSize, VolumeID: o.VolumeID, Name: o.Name, Barcode: o.Barcode,
			Pool: o.Pool, BlockSize: o.BlockSize, Created: o.Created, MediaType: mediaTape}
		params := o
		params.RequestID, params.Created = "", time.Time{} // a repeat from another leader has its own clock
		return remember(&n.orders, ctx, "label", o.RequestID, params, func() (wire.TapeLabelResult, error) {
			if err := m.Label(ctx, o.Slot, o.Barcode, l, o.Overwrite); err != nil {
				return wire.TapeLabelResult{}, edgeError(err)
			}
			n.log.Info("labeled tape", "library", o.Library, "slot", o.Slot, "barcode", o.Barcode, "volume", o.VolumeID, "pool", o.Pool, "request", o.RequestID)
			return wire.TapeLabelResult{Barcode: o.Barcode, VolumeID: o.VolumeID, Slot: o.Slot}, nil
		})
	}))
	prefix := wire.NodeSubject(n.cfg.ID, "")
	if _, err := wire.ServeOrders(ctx, n.nc, prefix+">", "storage node", n.cfg.ID, n.log, &n.orderRuns, n.group.ID, r.Dispatch(func(subject string) (string, bool) {
		if len(subject) > len(prefix) {
			return subject[len(prefix):], true
		}
		return "", false
	})); err != nil {
		return err
	}
	return wire.Flush(n.nc)
}

// library is the library named name; "" names the only one.
func (n *Node) library(name string) (*library.Manager, error) {
	if name == "" && len(n.libs) == 1 {
		for _, m := range n.libs {
			return m, nil
		}
	}
	if m := n.libs[name]; m != nil {
		return m, nil
	}
	if name == "" {
		return nil, wire.Errorf(wire.CodeInvalidArgument, "name the library (--library)", "storage node %s has %d libraries", n.cfg.ID, len(n.libs))
	}
	return nil, wire.Errorf(wire.CodeNotFound, "check the library's name with 'cairn library status'", "storage node %s has no library %s", n.cfg.ID, name)
}

// Library is the library named name, nil when the node has none of that
// name. In-process stacks reach an emulated library's operator's hands
// (Emulated().Insert and Remove at the mail slots) through it.
func (n *Node) Library(name string) *library.Manager {
	m, _ := n.library(name)
	return m
}

func (n *Node) closeLibraries() {
	for name, m := range n.libs {
		if err := m.Close(); err != nil {
			n.log.Warn("close library", "library", name, "err", err)
		}
		delete(n.libs, name)
	}
}

// reporter tells the servers what the libraries report (library.Reporter).
// The calls must not block: the reports queue, and one goroutine sends
// them in order, so "waiting" and "no longer waiting" arrive in the order
// they happened.
type reporter struct{ n *Node }

func (r reporter) TapeMoved(m wire.TapeMoved) {
	r.n.report(func(ctx context.Context) {
		if err := r.n.request(ctx, wire.OpTapeMoved, m, nil); err != nil {
			r.n.log.Warn("could not report a tape move; the next inventory will", "barcode", m.Barcode, "to", m.To, "err", err)
		}
	})
}

func (r reporter) JobWaiting(job uint64, reason string) {
	r.n.report(func(ctx context.Context) {
		if err := r.n.request(ctx, wire.OpJobWaiting, wire.JobWaitingReq{JobID: job, Reason: reason}, nil); err != nil {
			r.n.log.Warn("could not report what a job waits for", "job", job, "reason", reason, "err", err)
		}
	})
}

func (n *Node) report(f func(context.Context)) {
	n.reportMu.Lock()
	n.reports = append(n.reports, f)
	n.reportMu.Unlock()
	select {
	case n.reportCh <- struct{}{}:
	default:
	}
}

func (n *Node) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.reportCh:
		}
		for {
			n.reportMu.Lock()
			if len(n.reports) == 0 {
				n.reportMu.Unlock()
				break
			}
			f := n.reports[0]
			n.reports = n.reports[1:]
			n.reportMu.Unlock()
			rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			f(rctx)
			cancel()
		}
	}
}

func (n *Node) addMedium(pool string, m medium) {
	n.media = append(n.media, m)
	n.byPool[pool] = m
}

// readerOf is the medium that reads part p of a restore, nil for none.
func (n *Node) readerOf(p wire.ReadPart) medium {
	for _, m := range n.readers {
		if m.reads(p) {
			return m
		}
	}
	return nil
}

func (n *Node) usage() []wire.PoolUsage {
	var out []wire.PoolUsage
	for _, m := range n.media {
		if u, ok := m.usage(); ok {
			out = append(out, u)
		}
	}
	return out
}

// DataAddr is the address agents dial.
func (n *Node) DataAddr() string {
	if n.cfg.AdvertiseAddr != "" {
		return n.cfg.AdvertiseAddr
	}
	if n.ln != nil {
		return n.ln.Addr().String()
	}
	return n.cfg.DataAddr
}

// Registered reports whether a server accepted the node's registration.
func (n *Node) Registered() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ticketKeys != nil
}

// Close stops accepting, ends running streams and disconnects.
func (n *Node) Close() error {
	if n.cancel != nil {
		n.cancel()
	}
	if n.ln != nil {
		n.ln.Close()
	}
	n.mu.Lock()
	for c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.wg.Wait()
	// An order under way (a robot move, a label) answers, canceled,
	// before its library and the connection it answers on go.
	n.orderRuns.Close()
	n.closeLibraries()
	for _, m := range n.media {
		if c, ok := m.(interface{ close() }); ok {
			c.close()
		}
	}
	if n.nc != nil {
		n.nc.Close()
	}
	n.releaseSpoolDirs()
	return n.guard.Close()
}

// claimSpoolDirs takes the tape pools' spool directories for this node and
// clears what a killed node left in them.
func (n *Node) claimSpoolDirs() error {
	for _, p := range n.cfg.TapePools {
		if p.SpoolDir == "" || n.spoolLocks[p.SpoolDir] != nil {
			continue
		}
		lock, removed, bytes, err := claimSpoolDir(p.SpoolDir)
		if err != nil {
			n.releaseSpoolDirs()
			return fmt.Errorf("tape pool %s: %w", p.Name, err)
		}
		if n.spoolLocks == nil {
			n.spoolLocks = map[string]*os.File{}
		}
		n.spoolLocks[p.SpoolDir] = lock
		if removed > 0 {
			n.log.Warn("removed the spool chunks of backups that were cut off when this node last stopped",
				"dir", p.SpoolDir, "files", removed, "bytes", bytes)
		}
	}
	return nil
}

func (n *Node) releaseSpoolDirs() {
	for dir, f := range n.spoolLocks {
		f.Close()
		delete(n.spoolLocks, dir)
	}
}

func (n *Node) register(ctx context.Context) error {
	n.mu.Lock()
	fp := n.fingerprint
	n.mu.Unlock()
	req := wire.NodeRegisterReq{ID: n.cfg.ID, DataAddr: n.DataAddr(), CertSHA256: fp, Version: Version}
	for _, m := range n.media {
		req.Pools = append(req.Pools, m.register())
	}
	for _, lc := range n.cfg.Libraries {
		if m := n.libs[lc.Name]; m != nil {
			info := m.Info()
			info.Name = lc.Name
			req.Libraries = append(req.Libraries, info)
		}
	}
	var resp wire.NodeRegisterResp
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := wire.RequestIn(rctx, n.nc, n.group.ID(), wire.FromNodeSubject(n.cfg.ID, wire.OpNodeRegister), req, &resp); err != nil {
		return err
	}
	if n.group.Learn(resp.Group) {
		n.log.Info("the servers' group is learned from the registration: every request names it from now on, until the node stops", "group", resp.Group)
	}
	keys := resp.TicketKeys
	if len(keys) == 0 {
		keys = [][]byte{resp.TicketKey} // a server from before groups
	}
	var pubs []ed25519.PublicKey
	for _, k := range keys {
		if len(k) != ed25519.PublicKeySize {
			return errors.New("server sent no valid ticket key")
		}
		pubs = append(pubs, ed25519.PublicKey(k))
	}
	n.mu.Lock()
	n.ticketKeys = pubs
	n.mu.Unlock()
	return nil
}

// heartbeatLoop registers until a server answers, then heartbeats, and
// registers again now and then so a server that lost its state relearns the
// node.
func (n *Node) heartbeatLoop(ctx context.Context) {
	wire.KeepRegistered(ctx, n.log, n.cfg.HeartbeatInterval, n.Registered, func(ctx context.Context) error {
		first := !n.Registered()
		err := n.register(ctx)
		if err == nil && first {
			n.log.Info("registered with the servers")
		}
		return err
	}, n.beat)
}

// beat tells the servers the node lives, its pools' free space and
// whether it drains.
func (n *Node) beat() {
	hb := wire.NodeHeartbeat{ID: n.cfg.ID, Site: n.cfg.Site, Streams: n.streams(), Pools: n.usage(), Draining: n.isDraining(), Group: n.group.ID()}
	if err := wire.Publish(n.nc, wire.NodeBeatSubject(n.cfg.ID), hb); err != nil {
		n.log.Debug("heartbeat", "err", err)
	}
}

func (n *Node) isDraining() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.draining
}

// isHandingBack reports whether the sessions that end now were cut off by
// a drain that ran out.
func (n *Node) isHandingBack() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.handingBack
}

// Drain winds the node down before it stops (SIGTERM): it takes no new
// data connection, tells the servers so at once (they send it no job), and
// lets the running sessions finish until ctx ends. Those still running
// then are cut off and handed back: each is rolled back on its volume and
// reported to the servers as handed back, so its job goes on with another
// attempt (on another node of the pool), never half recorded.
func (n *Node) Drain(ctx context.Context) {
	n.mu.Lock()
	if n.draining {
		n.mu.Unlock()
		return
	}
	n.draining = true
	n.drained = make(chan struct{})
	running := len(n.conns)
	if running == 0 {
		close(n.drained)
	}
	drained := n.drained
	n.mu.Unlock()
	if n.ln != nil {
		n.ln.Close()
	}
	if n.nc != nil {
		n.beat()
		_ = n.nc.FlushTimeout(5 * time.Second)
	}
	if running > 0 {
		dl, _ := ctx.Deadline()
		n.log.Info("stopping: taking no new session, waiting for the running ones to finish", "sessions", running, "until", dl.Format(time.RFC3339))
	}
	select {
	case <-drained:
		if running > 0 {
			n.log.Info("every session finished")
		}
		return
	case <-ctx.Done():
	}
	n.mu.Lock()
	n.handingBack = true
	left := len(n.conns)
	for c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
	n.log.Warn("drain ended before the sessions did: handing them back to the servers", "sessions", left)
	// Each session rolls back and reports; Close waits for them.
	select {
	case <-drained:
	case <-time.After(30 * time.Second):
		n.log.Warn("sessions still winding down after 30s; stopping anyway")
	}
}

func (n *Node) streams() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.conns)
}

func (n *Node) acceptLoop(ctx context.Context) {
	pending := newPendingConns(n.cfg.MaxPendingConns, n.cfg.MaxPendingPerHost)
	for {
		if !pending.wait(ctx) {
			return
		}
		c, err := n.ln.Accept()
		if err != nil {
			pending.unused()
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			n.log.Warn("accept on data port", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		admitted, ok := pending.admit(c)
		if !ok {
			n.metrics.ticketsRejected.WithLabelValues("too_many_pending").Inc()
			c.Close()
			if k := pending.refusedSince(time.Now(), 10*time.Second); k > 0 {
				n.log.Warn("data connections closed unread: their address has too many connections that have not shown a ticket yet (max_pending_per_host)",
					"peer", hostOf(c.RemoteAddr()), "closed", k, "max_pending_per_host", n.cfg.MaxPendingPerHost)
			}
			continue
		}
		n.mu.Lock()
		n.conns[c] = struct{}{}
		n.mu.Unlock()
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			defer admitted()
			defer func() {
				n.mu.Lock()
				delete(n.conns, c)
				if n.draining && len(n.conns) == 0 {
					select {
					case <-n.drained:
					default:
						close(n.drained)
					}
				}
				n.mu.Unlock()
				c.Close()
			}()
			n.serveConn(ctx, dataplane.ServerConn(c, n.tls), admitted)
		}()
	}
}

// serveConn checks a connection's ticket and runs what it allows. admitted
// is called once the ticket is found valid: the connection no longer
// counts as pending.
func (n *Node) serveConn(ctx context.Context, conn *dataplane.Conn, admitted func()) {
	defer conn.Close()
	log := n.log.With("peer", conn.RemoteAddr().String())
	_ = conn.SetDeadline(time.Now().Add(n.cfg.HelloTimeout))
	var hello dataplane.Hello
	if err := conn.ReadJSON(dataplane.FrameHello, &hello); err != nil {
		log.Warn("data connection without a valid hello", "err", err)
		_ = conn.WriteError(wire.Errorf(wire.CodeBadRequest, "", "expected a hello frame: %w", err))
		return
	}
	if hello.V < 1 || hello.V > dataplane.Version {
		log.Warn("data connection of another protocol version refused", "version", hello.V)
		_ = conn.WriteError(versionError(hello.V))
		return
	}
	t, err := n.checkTicket(ctx, hello.Ticket)
	if errors.Is(err, errNotRegistered) {
		// Not a bad ticket: this node cannot check any yet. The servers
		// that sent the agent here still count it online from before a
		// restart; as for a node the agent cannot reach, they try the
		// backup again, on another node or here once it registered.
		n.metrics.ticketsRejected.WithLabelValues("not_registered").Inc()
		log.Warn("data connection refused: not registered with the servers yet", "err", err)
		_ = conn.WriteError(wire.Errorf(wire.CodeNodeLost, "wait for the storage node to register with the servers (its log says so), then rerun the job",
			"storage node %s refused the connection: %w", n.cfg.ID, err))
		return
	}
	if err != nil {
		var te *ticket.Error
		reason := "other"
		if errors.As(err, &te) {
			reason = string(te.Reason)
		}
		n.metrics.ticketsRejected.WithLabelValues(reason).Inc()
		log.Warn("ticket refused", "reason", reason, "err", err)
		_ = conn.WriteError(wire.Errorf(wire.CodeTicketRejected, "", "storage node %s refused the connection: %w", n.cfg.ID, err))
		return
	}
	if t.Op == ticket.OpRestore && hello.V < 2 {
		// Version 1 agents relayed the plan; this node fetches it.
		log.Warn("restore of an agent of protocol version 1 refused", "job", t.JobID)
		_ = conn.WriteError(versionError(hello.V))
		return
	}
	admitted()
	conn.Admit()
	_ = conn.SetDeadline(time.Time{})
	// From here on neither side waits for the other forever: a stalled
	// agent fails the stream within IdleTimeout, and the drive it holds
	// goes back. While the node works without sending (a mount, a
	// locate, a wait for a tape) keepalives tell the agent it lives.
	conn.SetTimeout(n.cfg.IdleTimeout)
	conn.Keepalive(min(dataplane.KeepaliveInterval, n.cfg.IdleTimeout/3))
	log = log.With("job", t.JobID, "attempt", t.Attempt, "client", t.Client, "op", t.Op)
	ctx, done, err := n.startJob(ctx, t, conn)
	if err != nil {
		log.Warn("data connection refused", "attempt", t.Attempt, "err", err)
		_ = conn.WriteError(edgeError(err))
		return
	}
	defer done()
	switch t.Op {
	case ticket.OpBackup:
		n.backup(ctx, log, conn, t)
	case ticket.OpRestore:
		n.restore(ctx, log, conn, t, agentReads{packedStarts: hello.PackedReadStart >= dataplane.PackedReadStartVersion, storedBlocks: hello.StoredBlocks >= dataplane.StoredBlockVersion})
	}
}

// versionError refuses an agent that speaks another data-port protocol.
func versionError(v int) *wire.Error {
	return wire.Errorf(wire.CodeUnsupportedVersion, "run the same Cairn release on agents and storage nodes",
		"%w", &dataplane.VersionError{Peer: v, Ours: dataplane.Version, PeerIs: "agent"})
}

// jobStream is a job's stream on this node, which the servers may order
// stopped.
type jobStream struct {
	attempt int
	cancel  context.CancelCauseFunc
	conn    *dataplane.Conn
}

// close closes the stream's connection, so that a read or write blocked on
// its agent returns now; a consolidation has none, and stops with its
// context.
func (js *jobStream) close() {
	if js.conn != nil {
		_ = js.conn.Close()
	}
}

// startJob registers the stream of a job for cancelJob. A stream of a
// newer attempt of the same job stops the one of an older attempt still
// here (the servers gave up on it), and an attempt the servers stopped, or
// older than one running, is refused: a job's attempts never overlap on a
// node, so two of them never hold a drive or write a volume at once.
func (n *Node) startJob(ctx context.Context, t ticket.Ticket, conn *dataplane.Conn) (context.Context, func(), error) {
	n.mu.Lock()
	prev := n.jobs[t.JobID]
	if t.Attempt != 0 {
		if st, ok := n.stopped[t.JobID]; ok && t.Attempt <= st.attempt {
			n.mu.Unlock()
			return nil, nil, wire.Errorf(wire.CodeAborted, "", "attempt %d of job %d was stopped by the servers (%s)", t.Attempt, t.JobID, st.reason)
		}
		if prev != nil && prev.attempt > t.Attempt {
			n.mu.Unlock()
			return nil, nil, wire.Errorf(wire.CodeAborted, "", "attempt %d of job %d runs here: attempt %d is over", prev.attempt, t.JobID, t.Attempt)
		}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	js := &jobStream{attempt: t.Attempt, cancel: cancel, conn: conn}
	n.jobs[t.JobID] = js
	n.mu.Unlock()
	if prev != nil && t.Attempt != 0 && prev.attempt < t.Attempt {
		n.log.Warn("stopping the stream of an earlier attempt of a job whose next attempt connected", "job", t.JobID, "attempt", prev.attempt, "next", t.Attempt)
		prev.cancel(wire.Errorf(wire.CodeAborted, "", "attempt %d of job %d is over: attempt %d connected", prev.attempt, t.JobID, t.Attempt))
		prev.close()
	}
	return ctx, func() {
		n.mu.Lock()
		if n.jobs[t.JobID] == js {
			delete(n.jobs, t.JobID)
		}
		n.mu.Unlock()
		cancel(nil)
	}, nil
}

// stoppedAttempt is an attempt the servers ordered stopped, kept while a
// ticket of it could still be presented.
type stoppedAttempt struct {
	attempt int
	reason  string
	at      time.Time
}

// stoppedMemory bounds how long a stop order is remembered: longer than a
// ticket is valid, so no ticket of a stopped attempt outlives it.
const stoppedMemory = 24 * time.Hour

// noteStopped remembers a stop order; n.mu is held.
func (n *Node) noteStopped(o wire.CancelJob, now time.Time) {
	if o.Attempt == 0 {
		return // a stop of whatever runs: there is no attempt to fence
	}
	if st, ok := n.stopped[o.JobID]; !ok || st.attempt < o.Attempt {
		n.stopped[o.JobID] = stoppedAttempt{attempt: o.Attempt, reason: o.Reason, at: now}
	}
	for id, st := range n.stopped {
		if now.Sub(st.at) > stoppedMemory {
			delete(n.stopped, id)
		}
	}
}

// cancelJob stops a job's stream at once, when it runs here at the
// attempt named (any attempt for 0): its context ends with the servers'
// reason and its connection closes, so a read or write blocked on the
// agent returns now. The stream then does what a failure does: a backup
// cuts its session off its volumes, a restore stops reading; either gives
// its drive back. Stopping a job that does not run here is no error: the
// order is idempotent.
func (n *Node) cancelJob(o wire.CancelJob) wire.CancelResult {
	n.mu.Lock()
	n.noteStopped(o, time.Now())
	js := n.jobs[o.JobID]
	if js != nil && o.Attempt != 0 && js.attempt != 0 && js.attempt != o.Attempt {
		js = nil // another attempt's stream: not the one the order is about
	}
	n.mu.Unlock()
	if js == nil {
		return wire.CancelResult{}
	}
	n.log.Warn("stopping a job on the servers' order", "job", o.JobID, "attempt", o.Attempt, "reason", o.Reason)
	js.cancel(wire.Errorf(wire.CodeAborted, "", "job %d was stopped by the servers: %s", o.JobID, o.Reason))
	js.close()
	return wire.CancelResult{Running: true}
}

// errNotRegistered: the node has no ticket keys yet, since no server
// answered its registration since it started.
var errNotRegistered = errors.New("this storage node has not registered with a server yet; retry in a moment")

// keyRefreshInterval bounds how often tickets that do not verify make the
// node ask the servers for the group's keys again, so forged tickets cannot
// make it flood them.
const keyRefreshInterval = 2 * time.Second

// checkTicket verifies a ticket with the group's keys. One that does not
// verify makes the node ask the group for its keys once before it refuses
// it: the keys it holds may be stale (it registered while a server with
// keys of its own answered, before this change).
func (n *Node) checkTicket(ctx context.Context, s string) (ticket.Ticket, error) {
	n.mu.Lock()
	keys := n.ticketKeys
	n.mu.Unlock()
	if keys == nil && n.refreshKeys(ctx) {
		// The servers may have taken this node's registration, and sent
		// an agent here, before their answer reached it: asked again,
		// they answer at once. Refused instead, the agent's backup went
		// back to the queue and waited a minute for a node restart that
		// had already happened.
		n.mu.Lock()
		keys = n.ticketKeys
		n.mu.Unlock()
	}
	if keys == nil {
		return ticket.Ticket{}, errNotRegistered
	}
	now := time.Now()
	t, err := verifyWithAny(s, keys, now, n.cfg.ClockSkew)
	if errors.Is(err, &ticket.Error{Reason: ticket.BadSignature}) && n.refreshKeys(ctx) {
		n.mu.Lock()
		keys = n.ticketKeys
		n.mu.Unlock()
		t, err = verifyWithAny(s, keys, now, n.cfg.ClockSkew)
	}
	if err != nil {
		return t, err
	}
	if t.Node != n.cfg.ID {
		return t, &ticket.Error{Reason: ticket.WrongNode, JobID: t.JobID, Detail: fmt.Sprintf("the ticket is for storage node %s", t.Node)}
	}
	if t.Op != ticket.OpBackup && t.Op != ticket.OpRestore {
		return t, &ticket.Error{Reason: ticket.WrongOp, JobID: t.JobID, Detail: string(t.Op)}
	}
	if err := n.guard.Use(t, now); err != nil {
		return t, err
	}
	return t, nil
}

// verifyWithAny verifies s with the first of keys that its signature
// matches.
func verifyWithAny(s string, keys []ed25519.PublicKey, now time.Time, skew time.Duration) (ticket.Ticket, error) {
	var t ticket.Ticket
	var err error
	for _, k := range keys {
		t, err = ticket.Verify(s, k, now, skew)
		if !errors.Is(err, &ticket.Error{Reason: ticket.BadSignature}) {
			return t, err
		}
	}
	return t, err
}

// refreshKeys registers again to learn the group's ticket keys, at most
// once per keyRefreshInterval; it reports whether it did.
func (n *Node) refreshKeys(ctx context.Context) bool {
	n.refreshMu.Lock()
	defer n.refreshMu.Unlock()
	n.mu.Lock()
	recent := time.Since(n.keysRefreshed) < keyRefreshInterval
	if !recent {
		n.keysRefreshed = time.Now()
	}
	n.mu.Unlock()
	if recent {
		return false
	}
	if err := n.register(ctx); err != nil {
		n.log.Warn("asking the servers for the group's ticket keys failed", "err", err)
		return false
	}
	n.log.Info("asked the servers for the group's ticket keys again (a ticket did not verify, or came before the registration's answer)")
	return true
}

// request sends a request to the servers, riding out a leader election.
func (n *Node) request(ctx context.Context, op string, req, resp any) error {
	rctx, cancel := context.WithTimeout(ctx, n.cfg.ServerWait)
	defer cancel()
	return wire.RequestRetryIn(rctx, n.nc, n.group.ID(), wire.FromNodeSubject(n.cfg.ID, op), req, resp, 10*time.Second)
}

// LoadedCerts are the certificates the node presents and trusts now: its
// NATS client certificate and CA, and its data port certificate.
func (n *Node) LoadedCerts() []pki.LoadedCert {
	out := wire.LoadedCerts(n.nc)
	n.mu.Lock()
	leaf := n.cert.Leaf
	n.mu.Unlock()
	if leaf != nil {
		out = append(out, pki.LoadedCert{Use: "data port", File: filepath.Join(n.cfg.DataDir, "data-tls.crt"), Cert: leaf})
	}
	return out
}

// Reload reads the certificates again (SIGHUP): the NATS client TLS files,
// and the data port's certificate (data-tls.crt and .key in the data
// directory). A new data port certificate is registered with the servers
// at once, since agents dial only the one the servers pin; a stream that
// runs keeps the certificate it started with. A file that does not load
// leaves what was in use.
func (n *Node) Reload(ctx context.Context) error {
	var errs []error
	said, err := wire.ReloadTLS(n.nc)
	if err != nil {
		errs = append(errs, err)
	}
	cert, fp, err := dataplane.LoadOrCreateCert(n.cfg.DataDir, n.cfg.ID)
	if err != nil {
		errs = append(errs, fmt.Errorf("data port certificate: %w (the certificate read before stays in use)", err))
	} else {
		n.mu.Lock()
		changed := fp != n.fingerprint
		n.cert, n.fingerprint = cert, fp
		n.mu.Unlock()
		what := "data port certificate (unchanged, SHA-256 " + fp[:16] + "...)"
		if changed {
			what = "data port certificate (new, SHA-256 " + fp[:16] + "...)"
			if err := n.register(ctx); err != nil {
				errs = append(errs, fmt.Errorf("register the new data port certificate with the servers: %w (the next registration, within a minute, will)", err))
			}
		}
		said = append(said, what)
	}
	for _, what := range said {
		n.log.Info("reloaded", "what", what)
	}
	n.log.Info("pools, libraries and every other setting take effect at a restart")
	for _, err := range errs {
		n.log.Error("reload failed", "err", err)
	}
	return errors.Join(errs...)
}
