package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/freeport"
	"github.com/cairnbackup/cairn/internal/poll"
)

// natsServerBin finds the nats-server program: on PATH, or where
// scripts/install-test-deps.sh puts it, $(go env GOPATH)/bin. A test that
// needs it fails under CAIRN_CI=1 when it is missing, and skips otherwise.
func natsServerBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		for _, dir := range filepath.SplitList(strings.TrimSpace(string(gopath))) {
			p := filepath.Join(dir, "bin", "nats-server")
			if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	need(t, "the nats-server program (run scripts/install-test-deps.sh)", errors.New("nats-server is neither on PATH nor in $(go env GOPATH)/bin"))
	return ""
}

// natsOpts shape a NATS cluster.
type natsOpts struct {
	// size is the number of servers; 3 when 0.
	size int
	// extra is added to server i's configuration file (i from 0), for
	// TLS or authorization blocks.
	extra func(i int) string
	// scheme of the client URLs: "nats" when empty.
	scheme string
}

// natsCluster is a cluster of real nats-server processes on 127.0.0.1,
// routed to each other, each with its own client, route and monitoring
// port. A server keeps its ports across restarts, so the roles' URL lists
// stay right.
type natsCluster struct {
	t       *testing.T
	scheme  string
	servers []*natsServer
}

// natsServer is one server of a natsCluster.
type natsServer struct {
	name    string
	client  string // host:port clients connect to
	route   string // host:port of the cluster routes
	monitor string // host:port of the HTTP monitoring endpoint
	proc    *proc
}

// newNATSCluster starts the servers and waits until each accepts clients and
// is routed to every other. They are stopped when the test ends.
func newNATSCluster(t *testing.T, l *logs, dir string, o natsOpts) *natsCluster {
	t.Helper()
	bin := natsServerBin(t)
	if o.size == 0 {
		o.size = 3
	}
	if o.scheme == "" {
		o.scheme = "nats"
	}
	c := &natsCluster{t: t, scheme: o.scheme}
	for i := 0; i < o.size; i++ {
		c.servers = append(c.servers, &natsServer{
			name: fmt.Sprintf("n%d", i+1), client: freeport.LoopbackAddr(t), route: freeport.LoopbackAddr(t), monitor: freeport.LoopbackAddr(t),
		})
	}
	for i, ns := range c.servers {
		var routes []string
		for _, other := range c.servers {
			if other != ns {
				routes = append(routes, "nats-route://"+other.route)
			}
		}
		conf := fmt.Sprintf("server_name: %s\nlisten: %q\nhttp: %q\ncluster {\n  name: cairn\n  listen: %q\n  routes: [%s]\n}\n",
			ns.name, ns.client, ns.monitor, ns.route, strings.Join(quoteAll(routes), ", "))
		if o.extra != nil {
			conf += o.extra(i) + "\n"
		}
		path := filepath.Join(dir, "nats-"+ns.name+".conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		ns.proc = newProc(t, l, dir, "nats-"+ns.name, "-c", path)
		ns.proc.bin = bin
	}
	t.Cleanup(func() {
		for _, ns := range c.servers {
			ns.proc.stop()
		}
	})
	for _, ns := range c.servers {
		ns.proc.start()
	}
	c.waitRouted()
	return c
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// URL lists every server's client URL, comma-separated, as the roles and
// nats.go take it.
func (c *natsCluster) URL() string {
	var urls []string
	for _, ns := range c.servers {
		urls = append(urls, c.scheme+"://"+ns.client)
	}
	return strings.Join(urls, ",")
}

// serverURL is the client URL of server i alone.
func (c *natsCluster) serverURL(i int) string { return c.scheme + "://" + c.servers[i].client }

// kill ends server i with SIGKILL.
func (c *natsCluster) kill(i int) { c.servers[i].proc.kill() }

// stop ends server i gracefully.
func (c *natsCluster) stop(i int) { c.servers[i].proc.stop() }

// start runs server i again on its ports and waits until it is routed to
// the other running servers.
func (c *natsCluster) start(i int) {
	c.t.Helper()
	c.servers[i].proc.start()
	c.waitRouted()
}

// waitRouted waits until every running server accepts clients and has a
// route to every other running server.
func (c *natsCluster) waitRouted() {
	c.t.Helper()
	poll.Until(c.t, 30*time.Second, func() error {
		for _, ns := range c.servers {
			failIfCrashed(c.t, ns.proc)
		}
		running := map[string]bool{}
		for _, ns := range c.servers {
			if ns.proc.alive() {
				running[ns.name] = true
			}
		}
		for _, ns := range c.servers {
			if !running[ns.name] {
				continue
			}
			peers, err := ns.routedTo()
			if err != nil {
				return err
			}
			for name := range running {
				if name != ns.name && !peers[name] {
					return fmt.Errorf("NATS server %s has no route to %s yet (routes to %v)", ns.name, name, peers)
				}
			}
		}
		return nil
	})
}

// routedTo asks the server's monitoring endpoint which servers it has
// routes to. An error means it does not answer yet.
func (ns *natsServer) routedTo() (map[string]bool, error) {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + ns.monitor + "/routez")
	if err != nil {
		if !ns.proc.alive() {
			return nil, fmt.Errorf("NATS server %s exited: %v", ns.name, ns.proc.exitErr())
		}
		return nil, fmt.Errorf("NATS server %s does not answer yet: %v", ns.name, err)
	}
	defer resp.Body.Close()
	var rz struct {
		Routes []struct {
			RemoteName string `json:"remote_name"`
		} `json:"routes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&rz); err != nil {
		return nil, fmt.Errorf("routez of NATS server %s: %v", ns.name, err)
	}
	peers := map[string]bool{}
	for _, r := range rz.Routes {
		peers[r.RemoteName] = true
	}
	return peers, nil
}

// clientsOf counts the client connections server i holds whose name starts
// with prefix ("cairn-agent-web01", "cairn-server-"), from its monitoring
// endpoint.
func (c *natsCluster) clientsOf(i int, prefix string) (int, error) {
	hc := http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get("http://" + c.servers[i].monitor + "/connz?limit=1024")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var cz struct {
		Connections []struct {
			Name string `json:"name"`
		} `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&cz); err != nil {
		return 0, err
	}
	n := 0
	for _, cn := range cz.Connections {
		if strings.HasPrefix(cn.Name, prefix) {
			n++
		}
	}
	return n, nil
}

// TestNATSClusterHelper checks the helper itself: three routed servers, a
// killed one restarts on its ports and is routed again, and a graceful stop
// exits 0.
func TestNATSClusterHelper(t *testing.T) {
	l := &logs{}
	l.printOnFailure(t)
	c := newNATSCluster(t, l, t.TempDir(), natsOpts{})
	if n := strings.Count(c.URL(), ","); n != 2 {
		t.Fatalf("URL %q does not list 3 servers", c.URL())
	}
	c.kill(1)
	c.waitRouted()
	c.start(1)
	c.stop(2)
	c.start(2)
}
