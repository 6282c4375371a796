// Package natsauth writes the NATS server's authorization for a Cairn
// deployment: one user per server, storage node, agent and admin, each
// allowed exactly the subjects of its role (wire.RoleSubjects), behind TLS.
// An agent's credential thus reads only its own orders and replies, and can
// neither speak for another client nor issue admin requests; an admin's
// reads only its own replies, and exports keys only when it is a key admin.
// The embedded NATS server of `cairn dev` takes the same users (Embedded).
//
// Where the NATS server verifies client certificates, each user is the
// subject of a role's certificate, and the NATS server takes the user from
// the certificate a connection presents (tls verify_and_map): the name in a
// certificate and the role it may act as are one, so a host holding web1's
// certificate cannot log in as web2 whatever else it holds. No nkey user is
// written then: nats-server lets an nkey it lists in whatever certificate
// comes with it, which would undo that. Without client certificates, each
// user is an nkey whose seed the role keeps.
package natsauth

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nkeys"

	"github.com/cairnbackup/cairn/natsd"
	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

// User is one NATS identity of a deployment: a role kind (wire.KindServer,
// KindNode, KindAgent, KindAdmin) and the server's, node's, client's or
// admin's name, authenticated by its certificate's subject (Subject) or by
// an nkey (NKey).
type User struct {
	Kind string
	Name string
	// Subject is the subject of the certificate the user logs in with
	// (CertUser), e.g. "CN=web1,O=Cairn".
	Subject string
	// NKey is the user's public nkey (U...). The seed stays in the file
	// the role is started with (--nats-nkey).
	NKey string
	// SeedFile is where the seed is, for telling the operator.
	SeedFile string
	// OldNKey is the public nkey of the seed a rotation replaced
	// (RotateSeed), accepted as well until the rotation is finished
	// (FinishRotation), so the role goes on with its old seed until it is
	// given the new one.
	OldNKey string
	// KeyAdmin gives an admin the key escrow operations ('cairn key
	// export'), which hand out every data key in the clear; other admins
	// run everything else.
	KeyAdmin bool
}

// Permissions are exactly what the user's role needs: PermissionsOf its
// kind and name, and for a key admin the key escrow subjects as well.
func (u User) Permissions() Permissions {
	p := PermissionsOf(u.Kind, u.Name)
	if u.Kind == wire.KindAdmin && u.KeyAdmin {
		p.Publish = append(p.Publish, wire.KeyAdminPublish...)
	}
	return p
}

// CertUser is the user of kind and name that logs in with the certificate
// 'cairn cert issue --name NAME' makes (pki.Subject).
func CertUser(kind, name string) (User, error) {
	if err := wire.ValidateName(kind, name); err != nil {
		return User{}, err
	}
	return User{Kind: kind, Name: name, Subject: CertSubjectOf(name)}, nil
}

// CertSubjectOf is the user name, in the NATS configuration, of the
// certificate of name.
func CertSubjectOf(name string) string { return pki.Subject(name).String() }

// Permissions are a user's NATS permissions.
type Permissions struct {
	Publish   []string
	Subscribe []string
	// AllowResponses lets the user answer the requests it receives (one
	// reply each, to whatever reply subject the request names), which is
	// how storage nodes and agents acknowledge orders without a publish
	// permission on the servers' inboxes.
	AllowResponses bool
}

// PermissionsOf is exactly what a role kind needs, from wire.RoleSubjects:
// an agent or storage node its own subjects and inbox, an admin the API
// (key export aside), its own inbox and job events, a server everything.
func PermissionsOf(kind, name string) Permissions {
	pub, sub := wire.RoleSubjects(kind, name)
	return Permissions{Publish: pub, Subscribe: sub, AllowResponses: kind == wire.KindAgent || kind == wire.KindNode}
}

// Embedded is u as the embedded NATS server of `cairn dev` takes it, with
// exactly the permissions Render writes for it.
func (u User) Embedded() natsd.User {
	p := u.Permissions()
	return natsd.User{NKey: u.NKey, Name: u.Kind + " " + u.Name, Publish: p.Publish, Subscribe: p.Subscribe, AllowResponses: p.AllowResponses}
}

// SeedFileName is the file an nkey seed of kind and name is kept in.
func SeedFileName(kind, name string) string { return kind + "-" + name + ".nk" }

// NameOfSeedFile is the name of the kind's user whose seed path holds, when
// the file is named as SeedFileName names it (admin-alice.nk: alice).
func NameOfSeedFile(path, kind string) (string, bool) {
	base := filepath.Base(path)
	name, ok := strings.CutPrefix(base, kind+"-")
	if !ok {
		return "", false
	}
	name, ok = strings.CutSuffix(name, ".nk")
	if !ok || wire.ValidateName(kind, name) != nil {
		return "", false
	}
	return name, true
}

// LoadOrCreateUser returns the user of kind and name with the nkey seed in
// dir, making the seed (mode 0600) when it does not exist yet. Reusing seeds
// lets an operator add a client to the list and regenerate the
// configuration without handing every other role new credentials.
func LoadOrCreateUser(dir, kind, name string) (User, error) {
	if err := wire.ValidateName(kind, name); err != nil {
		return User{}, err
	}
	path := filepath.Join(dir, SeedFileName(kind, name))
	u := User{Kind: kind, Name: name, SeedFile: path}
	pub, err := readSeedPublic(path)
	switch {
	case err == nil:
		u.NKey = pub
		if u.OldNKey, err = readSeedPublic(path + OldSeedSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return u, err
		}
		return u, nil
	case !errors.Is(err, fs.ErrNotExist):
		return u, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return u, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return u, err
	}
	if u.NKey, err = kp.PublicKey(); err != nil {
		return u, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return u, fmt.Errorf("credentials directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return u, fmt.Errorf("write nkey seed: %w", err)
	}
	_, err = fmt.Fprintf(f, "%s\n", seed)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return u, fmt.Errorf("write nkey seed %s: %w", path, err)
	}
	return u, nil
}

// readSeedPublic is the public key of the user seed in the file at path.
func readSeedPublic(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", fmt.Errorf("read nkey seed: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return "", fmt.Errorf("nkey seed file %s: %w; remove it to make a new one (the role then needs the new file)", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("nkey seed file %s does not hold a user seed (SU...)", path)
	}
	return pub, nil
}

// OldSeedSuffix marks the seed a rotation replaced, beside the new one:
// agent-web1.nk.old.
const OldSeedSuffix = ".old"

// ErrRotationUnderway means a seed's previous rotation is not finished.
var ErrRotationUnderway = errors.New("a rotation of this seed is under way")

// RotateSeed replaces the nkey seed of kind and name in dir with a new one,
// keeping the replaced one beside it (KIND-NAME.nk.old): the configuration
// written from dir then accepts both, so the role goes on with its old seed
// until it is given the new one and restarted, and FinishRotation then
// removes the old one. It refuses while a rotation of the same seed is not
// finished.
func RotateSeed(dir, kind, name string) (User, error) {
	if err := wire.ValidateName(kind, name); err != nil {
		return User{}, err
	}
	path := filepath.Join(dir, SeedFileName(kind, name))
	if _, err := readSeedPublic(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return User{}, fmt.Errorf("no nkey seed %s to rotate: is %s %s a user of this configuration?", path, kind, name)
		}
		return User{}, err
	}
	if _, err := os.Stat(path + OldSeedSuffix); err == nil {
		return User{}, fmt.Errorf("%w: %s still holds the seed it replaced; finish that rotation first (--finish-rotation)", ErrRotationUnderway, path+OldSeedSuffix)
	}
	// Stopped between the two, the old seed is kept and the next run
	// makes the new one.
	if err := os.Rename(path, path+OldSeedSuffix); err != nil {
		return User{}, fmt.Errorf("keep the old seed: %w", err)
	}
	return LoadOrCreateUser(dir, kind, name)
}

// FinishRotation removes the seeds rotations replaced in dir, and returns
// their files: the configuration written after it accepts the new seeds
// only.
func FinishRotation(dir string) ([]string, error) {
	old, err := filepath.Glob(filepath.Join(dir, "*.nk"+OldSeedSuffix))
	if err != nil {
		return nil, err
	}
	for _, f := range old {
		if err := os.Remove(f); err != nil {
			return nil, err
		}
	}
	return old, nil
}

// AuthConfig is a NATS server configuration for a deployment: TLS and one
// user per role and name, each with PermissionsOf its kind; for a NATS
// cluster, the routes to the other servers.
type AuthConfig struct {
	// Listen is the client address, host:port.
	Listen string
	// TLS names the NATS server's certificate and key and the CA its
	// clients' certificates must be signed by. Empty: no TLS (not for
	// production: credentials and data then cross the network in clear).
	TLS pki.Files
	// VerifyClients requires every client to present a certificate signed
	// by TLS.CA. The users are then certificate users (CertUser), mapped
	// from the certificate (verify_and_map); without it, nkey users.
	VerifyClients bool
	Users         []User

	// ServerName names this NATS server in its cluster's routes, its log
	// and its monitoring pages; empty: nats-server makes one up.
	ServerName string
	// Monitor is the HTTP monitoring address (varz, routez, healthz),
	// host:port; empty: none. It answers whoever reaches it, without TLS
	// or a login: keep it on 127.0.0.1.
	Monitor string
	// LogFile is where the server logs, rotated at LogFileLimit; empty:
	// standard error (the journal, under systemd).
	LogFile string
	// Cluster, when not nil, makes this server one of a NATS cluster.
	Cluster *Cluster
}

// Cluster is what one NATS server of a cluster needs to route messages to
// the others: the roles connect to any of them, and a message published on
// one reaches the subscribers on every other.
type Cluster struct {
	// Name is the cluster's name, the same on every server.
	Name string
	// Listen is where this server accepts routes, host:port.
	Listen string
	// Routes are the other servers' route addresses, host:port (this
	// server's own may be among them: nats-server skips it).
	Routes []string
	// RouteSubject is the subject of the certificate every NATS server of
	// the cluster presents on its routes ('cairn cert issue --name nats
	// --client --server' on each NATS host, "CN=nats,O=Cairn"). Only a
	// connection presenting it may be a route: any other certificate of the
	// CA (an agent's) would otherwise join as a route and read every message.
	RouteSubject string
}

// LogFileLimit is the size at which nats-server rotates its log file;
// LogFilesKept rotated files are kept.
const (
	LogFileLimit = "100MB"
	LogFilesKept = 10
)

// Render writes the configuration in nats-server's format, every setting
// with a comment that says what it is for, so the file can be read and
// edited as well as written again.
func (c AuthConfig) Render() ([]byte, error) {
	if c.Listen == "" {
		return nil, errors.New("the NATS listen address is empty")
	}
	if !c.TLS.Empty() && (c.TLS.Cert == "" || c.TLS.Key == "") {
		return nil, errors.New("NATS TLS needs the server's certificate and key")
	}
	if c.VerifyClients && c.TLS.CA == "" {
		return nil, errors.New("verifying clients needs the CA that signs their certificates")
	}
	if cl := c.Cluster; cl != nil {
		switch {
		case cl.Listen == "":
			return nil, errors.New("a NATS cluster needs the address this server accepts routes on")
		case c.TLS.CA == "" || c.TLS.Cert == "":
			// Routes carry every message of every role: in clear, or
			// from whoever dials the route port, they would undo the rest.
			return nil, errors.New("a NATS cluster needs TLS (--tls-ca, --tls-cert, --tls-key): its routes carry every message")
		case cl.RouteSubject == "":
			return nil, errors.New("a NATS cluster needs the subject of the NATS servers' certificate, the only one allowed on its routes")
		}
	}
	for _, u := range c.Users {
		switch {
		case c.VerifyClients && u.Subject == "":
			// nats-server accepts a listed nkey with any certificate of
			// the CA: web1's certificate and web2's seed would be web2.
			return nil, fmt.Errorf("%s %s has no certificate subject: with client certificates verified, every user is mapped from its certificate, never an nkey", u.Kind, u.Name)
		case !c.VerifyClients && !nkeys.IsValidPublicUserKey(u.NKey):
			return nil, fmt.Errorf("%s %s has no valid public nkey (without client certificates, each user needs one)", u.Kind, u.Name)
		}
	}
	var b bytes.Buffer
	q := strconv.Quote
	fmt.Fprintf(&b, "# NATS server configuration for Cairn, written by 'cairn cert nats-config'.\n")
	if c.Cluster != nil {
		fmt.Fprintf(&b, "# One of the %d servers of the NATS cluster %s: the roles connect to any of\n", len(c.Cluster.Routes), q(c.Cluster.Name))
		fmt.Fprintf(&b, "# them (--nats tls://a:4222,tls://b:4222,...), and each server routes what\n")
		fmt.Fprintf(&b, "# it receives to the others, so the loss of one stops nothing.\n")
	}
	if c.VerifyClients {
		fmt.Fprintf(&b, "# Each role logs in as the user its client certificate names (verify_and_map),\n")
	} else {
		fmt.Fprintf(&b, "# Each role has its own nkey user,\n")
	}
	fmt.Fprintf(&b, "# allowed only its own subjects (see\n# 'go doc github.com/cairnbackup/cairn/wire RoleSubjects').\n")
	fmt.Fprintf(&b, "# Every setting says what it is for: edit it, or write the file again with\n")
	fmt.Fprintf(&b, "# --force (which replaces edits). Then: nats-server --signal reload\n")
	fmt.Fprintf(&b, "# (a changed listen address, cluster or TLS file needs a restart).\n\n")
	if c.ServerName != "" {
		fmt.Fprintf(&b, "# This server's name, in the routes of the others, the log and monitoring.\n")
		fmt.Fprintf(&b, "server_name: %s\n\n", q(c.ServerName))
	}
	fmt.Fprintf(&b, "# Where the roles connect (their --nats URL names this host and port).\n")
	fmt.Fprintf(&b, "listen: %s\n\n", q(c.Listen))
	if c.Monitor != "" {
		fmt.Fprintf(&b, "# HTTP monitoring (/healthz, /varz, /routez, /connz): no TLS, no login, so on\n")
		fmt.Fprintf(&b, "# the loopback only; a Prometheus exporter or 'curl' on this host reads it.\n")
		fmt.Fprintf(&b, "http: %s\n\n", q(c.Monitor))
	}
	if c.LogFile != "" {
		fmt.Fprintf(&b, "# The log: its directory must exist, writable by the user nats-server runs\n")
		fmt.Fprintf(&b, "# as; rotated at %s, the %d newest rotated files kept.\n", LogFileLimit, LogFilesKept)
		fmt.Fprintf(&b, "log_file: %s\nlogtime: true\nlogfile_size_limit: %s\nlogfile_max_num: %d\n\n", q(c.LogFile), LogFileLimit, LogFilesKept)
	}
	if !c.TLS.Empty() {
		fmt.Fprintf(&b, "# TLS for the roles' connections: this server's certificate and key, and the\n")
		fmt.Fprintf(&b, "# CA the clients' certificates are signed by. A renewed certificate is read\n")
		fmt.Fprintf(&b, "# at 'nats-server --signal reload'.\n")
		fmt.Fprintf(&b, "tls {\n  cert_file: %s\n  key_file: %s\n", q(c.TLS.Cert), q(c.TLS.Key))
		if c.TLS.CA != "" {
			fmt.Fprintf(&b, "  ca_file: %s\n", q(c.TLS.CA))
		}
		if c.VerifyClients {
			fmt.Fprintf(&b, "  # every client presents a certificate signed by ca_file, and is the\n  # user its subject names\n  verify_and_map: true\n")
		}
		fmt.Fprintf(&b, "  timeout: 5\n}\n\n")
	}
	if cl := c.Cluster; cl != nil {
		fmt.Fprintf(&b, "# The routes between the NATS servers of the cluster.\n")
		fmt.Fprintf(&b, "cluster {\n")
		fmt.Fprintf(&b, "  # the same on every server of the cluster\n  name: %s\n", q(cl.Name))
		fmt.Fprintf(&b, "  # where this server accepts the others' routes\n  listen: %s\n", q(cl.Listen))
		fmt.Fprintf(&b, "  # the roles are given every server's URL: none learns other addresses\n")
		fmt.Fprintf(&b, "  # from the cluster, which its TLS could not verify\n  no_advertise: true\n")
		fmt.Fprintf(&b, "  # Routes are mutual TLS with the same files as the clients': each end\n")
		fmt.Fprintf(&b, "  # presents its certificate (issued with --client --server, since routes\n")
		fmt.Fprintf(&b, "  # both dial and accept) and checks the other's against ca_file.\n")
		fmt.Fprintf(&b, "  tls {\n    cert_file: %s\n    key_file: %s\n    ca_file: %s\n", q(c.TLS.Cert), q(c.TLS.Key), q(c.TLS.CA))
		fmt.Fprintf(&b, "    # the peer is the user its certificate's subject names: see authorization\n    verify_and_map: true\n    timeout: 5\n  }\n")
		fmt.Fprintf(&b, "  # Only the NATS servers' certificate (subject %s) may be a route;\n", cl.RouteSubject)
		fmt.Fprintf(&b, "  # another certificate of the CA, an agent's, is refused here.\n")
		fmt.Fprintf(&b, "  authorization {\n    user: %s\n    timeout: 5\n  }\n", q(cl.RouteSubject))
		fmt.Fprintf(&b, "  # every server of the cluster, this one included (it is skipped)\n  routes: [\n")
		for _, r := range cl.Routes {
			fmt.Fprintf(&b, "    %s\n", q("nats-route://"+r))
		}
		fmt.Fprintf(&b, "  ]\n}\n\n")
	}
	fmt.Fprintf(&b, "# One user per role and name. To add a client: its certificate ('cairn cert\n")
	fmt.Fprintf(&b, "# issue --name NAME --client'), its name in --agents, the file written again\n")
	fmt.Fprintf(&b, "# (--force) for every NATS server, and 'nats-server --signal reload' on each.\n")
	fmt.Fprintf(&b, "authorization {\n  timeout: 5\n  users: [\n")
	for _, u := range mergeBySubject(c.Users) {
		fmt.Fprintf(&b, "    # %s\n    {\n", u.what)
		if u.subject != "" {
			fmt.Fprintf(&b, "      user: %s\n", q(u.subject))
		} else {
			fmt.Fprintf(&b, "      nkey: %s\n", q(u.nkey))
		}
		fmt.Fprintf(&b, "      permissions: {\n")
		fmt.Fprintf(&b, "        publish: { allow: %s }\n", list(u.perm.Publish))
		fmt.Fprintf(&b, "        subscribe: { allow: %s }\n", list(u.perm.Subscribe))
		if u.perm.AllowResponses {
			fmt.Fprintf(&b, "        allow_responses: true\n")
		}
		fmt.Fprintf(&b, "      }\n    }\n")
	}
	fmt.Fprintf(&b, "  ]\n}\n")
	return b.Bytes(), nil
}

// rendered is one user as written: a certificate named in two roles (a host
// that runs a storage node and an agent under one name) is one NATS user
// with the subjects of both.
type rendered struct {
	what          string
	subject, nkey string
	perm          Permissions
}

func mergeBySubject(users []User) []rendered {
	var out []rendered
	at := map[string]int{}
	for _, u := range users {
		p := u.Permissions()
		what := u.Kind + " " + u.Name
		if u.Kind == wire.KindAdmin && u.KeyAdmin {
			what = "key admin " + u.Name
		}
		if u.Subject == "" {
			out = append(out, rendered{what: what, nkey: u.NKey, perm: p})
			if u.OldNKey != "" {
				out = append(out, rendered{what: what + ", its seed before the rotation under way", nkey: u.OldNKey, perm: p})
			}
			continue
		}
		i, ok := at[u.Subject]
		if !ok {
			at[u.Subject] = len(out)
			out = append(out, rendered{what: what, subject: u.Subject, perm: p})
			continue
		}
		r := &out[i]
		r.what += ", " + what
		r.perm.Publish = union(r.perm.Publish, p.Publish)
		r.perm.Subscribe = union(r.perm.Subscribe, p.Subscribe)
		r.perm.AllowResponses = r.perm.AllowResponses || p.AllowResponses
	}
	return out
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

func list(subjects []string) string {
	q := make([]string, len(subjects))
	for i, s := range subjects {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
