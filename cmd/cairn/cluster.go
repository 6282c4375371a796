package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/internal/datadir"
	"github.com/cairnbackup/cairn/keyring"
	"github.com/cairnbackup/cairn/server/cluster"
	"github.com/cairnbackup/cairn/wire"
)

func newClusterCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "The servers' Raft group: status, join, remove, init (secrets), recover"}
	c.AddCommand(&cobra.Command{
		Use:   "status",
		Short: "Show every member: its state, term, applied index and lag behind the leader",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st wire.ClusterStatusResp
			if err := g.request(cmd.Context(), wire.OpClusterStatus, wire.Empty{}, &st); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, st)
			}
			return printClusterStatus(g.out, st)
		},
	})
	var name, addr string
	var catchUp time.Duration
	join := &cobra.Command{
		Use:   "join --name NAME --raft-addr HOST:PORT",
		Short: "Add a running server to the group: checked, a non-voter until it caught up, then a voter",
		Long: `Add a server to the group. Start it first, on the group's NATS, with the
group's secrets file and without --bootstrap:

  cairn server --name NAME --raft-addr HOST:PORT --secrets FILE ...

then run this against the running group. The leader first asks the new
server over NATS and refuses, changing nothing, when it does not answer, is
another server, listens for Raft elsewhere, belongs to another group, or
holds other secrets (its key-encryption key or ticket signing key differs
from the group's: the fingerprints are compared, never the keys). It then
adds the server as a non-voter, which counts for no majority, waits until it
has caught up with the leader (at most --catch-up-timeout), and makes it a
voter. A join that fails on the way removes the non-voter again: the group
is as it was.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || addr == "" {
				return &usageError{fmt.Errorf("pass --name and --raft-addr of the server to add")}
			}
			g.timeout = max(g.timeout, catchUp+30*time.Second)
			var resp wire.ClusterJoinResp
			if err := g.request(cmd.Context(), wire.OpClusterJoin, wire.ClusterJoinReq{Name: name, RaftAddr: addr, CatchUpTimeout: catchUp}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			if resp.Already {
				fmt.Fprintf(g.out, "server %s (%s) is a voter of the group already; nothing changed\n", name, addr)
				return nil
			}
			fmt.Fprintf(g.out, "server %s (%s) joined the group: it answered with the group's secrets, caught up to catalog index %d in %s as a non-voter, and votes now\n",
				name, addr, resp.CaughtUpIndex, resp.CaughtUpIn.Round(time.Millisecond))
			return nil
		},
	}
	join.Flags().StringVar(&name, "name", "", "name of the server to add")
	join.Flags().StringVar(&addr, "raft-addr", "", "its Raft address")
	join.Flags().DurationVar(&catchUp, "catch-up-timeout", 60*time.Second, "how long the new server may take to catch up with the leader before the join is undone")
	var rmName string
	remove := &cobra.Command{
		Use:   "remove --name NAME",
		Short: "Remove a server from the group",
		Long: `Remove a server from the group. Removing the leader hands the leadership to
another voter first. A removal that would leave the group without a majority
of reachable voters is refused, naming who to start or remove first; the only
voter of a group cannot be removed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rmName == "" {
				return &usageError{fmt.Errorf("pass --name of the server to remove")}
			}
			var resp wire.ClusterRemoveResp
			if err := g.request(cmd.Context(), wire.OpClusterRemove, wire.ClusterRemoveReq{Name: rmName}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			if resp.NewLeader != "" {
				fmt.Fprintf(g.out, "server %s led the group: it handed the leadership to %s, which removed it\n", rmName, resp.NewLeader)
			} else {
				fmt.Fprintf(g.out, "server %s removed from the group\n", rmName)
			}
			fmt.Fprintf(g.out, "voters now: %s\n", strings.Join(resp.Voters, ", "))
			if resp.Warning != "" {
				fmt.Fprintf(g.out, "warning: %s\n", resp.Warning)
			}
			return nil
		},
	}
	remove.Flags().StringVar(&rmName, "name", "", "name of the server to remove")
	c.AddCommand(join, remove, newClusterInitCmd(g), newClusterRotateSecretsCmd(g), newClusterRecoverCmd(g))
	return c
}

// printClusterStatus prints the group as a table, with the servers on the
// NATS that are not its members below it.
func printClusterStatus(w io.Writer, st wire.ClusterStatusResp) error {
	leader := st.Leader
	if leader == "" {
		leader = "none (no majority, or an election is running)"
	}
	fmt.Fprintf(w, "group: %s\nleader: %s (answered by %s)\n", dash(st.Group), leader, st.Answered)
	t := newTable(w, "MEMBER", "RAFT ADDRESS", "VOTER", "STATE", "TERM", "APPLIED", "LAG", "REACHABLE")
	for _, m := range st.Members {
		reach := "yes"
		if !m.Reachable {
			reach = "no: " + m.Error
		}
		voter := "yes"
		if !m.Voter {
			voter = "non-voter (catching up)"
		}
		t.row(m.Name, m.RaftAddr, voter, dash(m.State), m.Term, m.AppliedIndex, m.Lag, reach)
	}
	if err := t.flush(); err != nil {
		return err
	}
	for _, m := range st.Members {
		if m.CatalogError != "" {
			fmt.Fprintf(w, "%s: catalog stopped, %d commands behind: %s\n", m.Name, m.CatalogBehind, m.CatalogError)
		}
	}
	for _, o := range st.OtherGroups {
		fmt.Fprintf(w, "WARNING: server %s (%s) of ANOTHER GROUP %s runs on this NATS: requests that name no group are refused while it runs; stop it, or join it to this group with a new --data directory and this group's --secrets, or, if both groups are wanted, give every role its group (--group)\n",
			o.Name, o.RaftAddr, o.Group)
	}
	for _, o := range st.Waiting {
		fmt.Fprintf(w, "not a member: server %s (%s) runs on this NATS and answers nobody; add it with 'cairn cluster join --name %s --raft-addr %s'\n",
			o.Name, o.RaftAddr, o.Name, o.RaftAddr)
	}
	return nil
}

func newClusterInitCmd(g *globals) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "init --out FILE",
		Short: "Make the group's secrets: the KEK and the ticket signing key every server shares",
		Long: `Make the secrets a group of servers shares, in a new file (mode 0600): the
key-encryption key that wraps the data keys in the catalog, and the key that
signs job tickets, which storage nodes check. Copy the file to every server
and start each with --secrets FILE; the first start copies the keys into its
data directory (the KEK into --kek-file when given: keep it out of the data
directory, see 'cairn server --help'), and a later start with another file
is refused. After that the file is needed no more: keep it offline.

A group of three over TLS:

  cairn cluster init --out secrets.json
  cairn server --name s1 --raft-addr 10.0.0.1:7010 --secrets secrets.json --bootstrap \
      --tls-ca ca.crt --tls-cert s1.crt --tls-key s1.key ...
  cairn server --name s2 --raft-addr 10.0.0.2:7010 --secrets secrets.json \
      --tls-ca ca.crt --tls-cert s2.crt --tls-key s2.key ...
  cairn cluster join --name s2 --raft-addr 10.0.0.2:7010
  (s3 likewise)

Keep a copy offline with the escrowed data keys: without the KEK, the
catalog's data keys do not open. To replace the secrets of a running group,
make new ones with this command and see 'cairn cluster rotate-secrets'.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runClusterInit(out, g.out)
		},
	}
	c.Flags().StringVar(&out, "out", "", "the secrets file to write (it must not exist)")
	return c
}

func newClusterRotateSecretsCmd(g *globals) *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "rotate-secrets --secrets FILE",
		Short: "Replace the group's key-encryption key and ticket signing key; every data key is wrapped anew",
		Long: `Replace the secrets of a running group (its key-encryption key and its ticket
signing key) with those of a new secrets file, without stopping anything:

  cairn cluster init --out /root/secrets-2026.json     # new secrets, anywhere
  # copy it to the same path on every server, readable by the user cairn:
  #   install -m 0640 -g cairn secrets-2026.json /etc/cairn/secrets-2026.json
  cairn cluster rotate-secrets --secrets /etc/cairn/secrets-2026.json

The path is read by each server, on its own disk: the secrets never cross
NATS. Every member of the group must run and read the same secrets from it,
or the rotation is refused and nothing changes (start the member, or remove
it). The leader then unwraps every data key with the old KEK, wraps it with
the new one, and the catalog takes the new wrapped keys, the new KEK's
fingerprint and the new ticket key in one step: the data keys themselves do
not change, so every backup already stored restores as before. Each server
then uses the new keys and writes them where it reads them at start (its
--kek-file or data directory, and ticket.key); a KEK from a systemd
credential it cannot write says so in its log: put the new one in the
credential before the next restart. Tickets signed with the old ticket key
stay valid until they expire.

Afterwards: remove the new file from the servers and keep it offline with
the escrowed data keys (a server that joins later is started with it); keep
the old file offline too while copies of the catalog made before (a backup of
a server's disk) may have to be opened, and destroy it after. A server
started with the old file ignores it and says so.

It takes a key admin's credential, like 'cairn key export'.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return &usageError{errors.New("pass --secrets FILE: the new secrets file ('cairn cluster init --out FILE'), at that path on every server")}
			}
			if !filepath.IsAbs(file) {
				return &usageError{fmt.Errorf("--secrets %s: give the absolute path the file has on every server", file)}
			}
			var resp wire.SecretsRotateResp
			if err := g.request(cmd.Context(), wire.OpSecretsRotate, wire.SecretsRotateReq{File: file}, &resp); err != nil {
				return err
			}
			if g.json {
				return printJSON(g.out, resp)
			}
			fmt.Fprintf(g.out, "the group's secrets are rotated: %d data keys wrapped with the new key-encryption key (fingerprint %s, was %s), tickets signed with the new key (fingerprint %s)\n",
				resp.Keys, resp.ToKEK, resp.FromKEK, resp.TicketKey)
			fmt.Fprintf(g.out, "servers holding them: %s\n", strings.Join(resp.Servers, ", "))
			fmt.Fprintf(g.out, "now remove %s from the servers and keep it offline, with the escrowed data keys ('cairn key export')\n", file)
			return nil
		},
	}
	c.Flags().StringVar(&file, "secrets", "", "the new secrets file, at this absolute path on every server")
	return c
}

func runClusterInit(out string, w io.Writer) error {
	if out == "" {
		return &usageError{errors.New("pass --out FILE for the group's secrets")}
	}
	if err := keyring.WriteSecrets(out, keyring.NewSecrets()); err != nil {
		return wire.Errorf(wire.CodeAlreadyExists, "a secrets file is never replaced: use the existing file, or choose another name for new secrets", "%w", err)
	}
	fmt.Fprintf(w, "wrote the group's secrets to %s (mode 0600)\n", out)
	fmt.Fprintf(w, "start every server with --secrets %s; keep a copy offline\n", out)
	return nil
}

type recoverOpts struct {
	data, peers, name string
}

func newClusterRecoverCmd(g *globals) *cobra.Command {
	var o recoverOpts
	c := &cobra.Command{
		Use:   "recover --data DIR --peers peers.json [--name NAME]",
		Short: "Restart a group that lost its majority for good, from a survivor (the server must be stopped)",
		Long: `Make a stopped server's Raft state start as the group listed in a peers
file: for a group that lost its majority for good (two of three servers, or
three of five, destroyed), where no election can succeed and 'cairn cluster
remove' cannot commit. It runs hashicorp/raft's RecoverCluster.

  1. Stop every surviving server.
  2. Pick the survivor with the most of the log (the highest APPLIED in
     'cairn cluster status' before the loss, or the last index in its log).
  3. Write peers.json with the survivors to keep, by name and Raft address:
       [{"id": "s1", "address": "10.0.0.1:7010"}]
  4. cairn cluster recover --data /srv/cairn/server --peers peers.json
     on each survivor listed (the same file on each).
  5. Start them: they elect a leader among themselves.
  6. Add new servers as usual: start each with --secrets (and without
     --bootstrap), then 'cairn cluster join'.

What the lost servers committed and this one never received is gone, and
every entry in this server's log is applied, even one the lost majority
never committed. Copy the data directory first if in doubt.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runClusterRecover(o, g.out, g.errOut)
		},
	}
	f := c.Flags()
	f.StringVar(&o.data, "data", "", "the stopped server's data directory (its --data)")
	f.StringVar(&o.peers, "peers", "", "peers file: the servers the group restarts with")
	f.StringVar(&o.name, "name", "", "this server's name (its --name); may be left out when the peers file lists one server")
	return c
}

func runClusterRecover(o recoverOpts, out, errOut io.Writer) error {
	if o.data == "" || o.peers == "" {
		return &usageError{errors.New("pass --data DIR (the stopped server's data directory) and --peers FILE")}
	}
	peers, err := cluster.ReadPeers(o.peers)
	if err != nil {
		return wire.Errorf(wire.CodeInvalidArgument, `write the survivors as [{"id":"s1","address":"10.0.0.1:7010"}]`, "%w", err)
	}
	name := o.name
	if name == "" {
		if len(peers) != 1 {
			return &usageError{fmt.Errorf("the peers file lists %d servers: pass --name, this server's name", len(peers))}
		}
		name = peers[0].ID
	}
	catPath := filepath.Join(o.data, "catalog.db")
	if _, err := os.Stat(catPath); err != nil {
		return wire.Errorf(wire.CodeNotFound, "pass the server's --data directory", "no catalog at %s: %w", catPath, err)
	}
	lock, err := datadir.Acquire(o.data, "cluster recover")
	if err != nil {
		return wire.Errorf(wire.CodeUnavailable, "stop the server first: it holds its catalog and Raft log while it runs", "%w", err)
	}
	defer lock.Release()
	store, err := catalog.Open(catPath)
	if err != nil {
		return wire.Errorf(wire.CodeUnavailable, "stop the server first: it holds its catalog and Raft log while it runs", "open the catalog: %w", err)
	}
	defer store.Close()
	cfg := cluster.DefaultConfig()
	cfg.ID = name
	cfg.Dir = filepath.Join(o.data, "raft")
	log := slog.New(slog.NewTextHandler(errOut, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if err := cluster.Recover(cfg, store, peers, log); err != nil {
		hint := "correct what the message names; 'cairn cluster recover --help' has the steps"
		if errors.Is(err, cluster.ErrServerRunning) {
			hint = "stop the server first: it holds its catalog and Raft log while it runs"
		}
		return wire.Errorf(wire.CodeInvalidArgument, hint, "%w", err)
	}
	applied, _ := store.AppliedIndex()
	fmt.Fprintf(out, "recovered %s: its group is now", o.data)
	for _, p := range peers {
		role := "voter"
		if !p.Voter {
			role = "non-voter"
		}
		fmt.Fprintf(out, " %s (%s, %s)", p.ID, p.Addr, role)
	}
	fmt.Fprintf(out, "; the catalog is at Raft index %d\n", applied)
	fmt.Fprintln(out, "start the server(s) listed; then add servers started with --secrets (without --bootstrap) with 'cairn cluster join'")
	return nil
}
