package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/cairnbackup/cairn/catalog"
)

// ErrServerRunning is wrapped by Recover's error when the server's Raft
// log cannot be opened: the server most likely still runs, and holds it.
var ErrServerRunning = errors.New("stop the server first: it holds the file while it runs")

// ReadPeers reads a peers file in hashicorp/raft's peers.json format, the
// members a recovered group starts with:
//
//	[{"id": "s1", "address": "10.0.0.1:7010", "non_voter": false}]
func ReadPeers(path string) ([]Peer, error) {
	conf, err := raft.ReadConfigJSON(path)
	if err != nil {
		return nil, fmt.Errorf(`peers file %s: %w (it lists the surviving servers: [{"id":"s1","address":"10.0.0.1:7010"}])`, path, err)
	}
	var peers []Peer
	for _, s := range conf.Servers {
		peers = append(peers, Peer{ID: string(s.ID), Addr: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return peers, nil
}

// Recover makes the Raft state in cfg.Dir start as a group of exactly peers,
// with raft.RecoverCluster: for a group that lost its majority for good,
// where no election can ever succeed and no AddVoter/RemoveServer can
// commit. The server must be stopped (its raft.db and catalog are locked
// while it runs). cfg.ID must be one of peers.
//
// Every entry in this server's log is applied, including ones the lost
// majority may never have committed; what the lost servers committed and
// this one never received is gone. Run it on the survivor with the highest
// last index ('cairn cluster status' before the loss, or the logs), on every
// survivor with the same peers, then start them.
func Recover(cfg Config, store *catalog.Store, peers []Peer, logger *slog.Logger) error {
	cfg = cfg.withDefaults()
	if cfg.ID == "" {
		return errors.New("recover: the server's name is empty")
	}
	if len(peers) == 0 {
		return errors.New("recover: the peers file lists no server")
	}
	var conf raft.Configuration
	me, voters := false, 0
	for _, p := range peers {
		if p.ID == "" || p.Addr == "" {
			return fmt.Errorf("recover: every peer needs an id and an address, got %+v", p)
		}
		s := raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr), Suffrage: raft.Nonvoter}
		if p.Voter {
			s.Suffrage = raft.Voter
			voters++
		}
		me = me || p.ID == cfg.ID
		conf.Servers = append(conf.Servers, s)
	}
	if !me {
		return fmt.Errorf("recover: the peers file does not list this server (%s): a recovered group must include the survivor it is run on", cfg.ID)
	}
	if voters == 0 {
		return errors.New("recover: the peers file lists no voter")
	}
	raftDB := filepath.Join(cfg.Dir, "raft.db")
	if _, err := os.Stat(raftDB); err != nil {
		return fmt.Errorf("recover: no Raft state at %s: %w (is --data the server's data directory?)", raftDB, err)
	}
	logger = logger.With("component", "raft-recover", "raft_id", cfg.ID)
	hlog := newHCLogger(logger, "raft")
	logs, err := raftboltdb.New(raftboltdb.Options{
		Path:        raftDB,
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, FreelistType: bbolt.FreelistMapType},
	})
	if err != nil {
		return fmt.Errorf("recover: open %s: %w (%w)", raftDB, err, ErrServerRunning)
	}
	defer logs.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, cfg.SnapshotRetain, hlog)
	if err != nil {
		return fmt.Errorf("recover: raft snapshots in %s: %w", cfg.Dir, err)
	}
	// RecoverCluster only asks the transport to encode peer addresses into
	// the new snapshot; it sends nothing, so no port is opened.
	_, trans := raft.NewInmemTransport(raft.ServerAddress(conf.Servers[0].Address))
	defer trans.Close()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	fsm := catalog.NewFSM(store, logger)
	if err := raft.RecoverCluster(rc, releasingFSM{fsm}, logs, logs, snaps, trans, conf); err != nil {
		return fmt.Errorf("recover the raft group in %s: %w", cfg.Dir, err)
	}
	if err := fsm.Failed(); err != nil {
		return fmt.Errorf("recover: the catalog could not apply the log: %w", err)
	}
	applied, _ := store.AppliedIndex()
	logger.Info("raft configuration recovered", "servers", len(conf.Servers), "voters", voters, "catalog_applied_index", applied)
	return nil
}

// releasingFSM releases each snapshot once it is persisted. RecoverCluster
// persists the snapshot it takes but never calls Release, and the catalog's
// snapshot holds a read transaction open until then, which would keep the
// catalog file from closing.
type releasingFSM struct{ *catalog.FSM }

func (f releasingFSM) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := f.FSM.Snapshot()
	if err != nil {
		return nil, err
	}
	return releasingSnapshot{snap}, nil
}

type releasingSnapshot struct{ raft.FSMSnapshot }

func (s releasingSnapshot) Persist(sink raft.SnapshotSink) error {
	defer s.Release()
	return s.FSMSnapshot.Persist(sink)
}
