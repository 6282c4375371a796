package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/wire"
)

func newClusterCmd(g *globals) *cobra.Command {
	c := &cobra.Command{Use: "cluster", Short: "The servers' Raft group: status, join, remove"}
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
			leader := st.Leader
			if leader == "" {
				leader = "none (no majority, or an election is running)"
			}
			fmt.Fprintf(g.out, "leader: %s (answered by %s)\n", leader, st.Answered)
			t := newTable(g.out, "MEMBER", "RAFT ADDRESS", "VOTER", "STATE", "TERM", "APPLIED", "LAG", "REACHABLE")
			for _, m := range st.Members {
				reach := "yes"
				if !m.Reachable {
					reach = "no: " + m.Error
				}
				t.row(m.Name, m.RaftAddr, m.Voter, dash(m.State), m.Term, m.AppliedIndex, m.Lag, reach)
			}
			return t.flush()
		},
	})
	var name, addr string
	join := &cobra.Command{
		Use:   "join --name NAME --raft-addr HOST:PORT",
		Short: "Add a running server to the group as a voter",
		Long: `Add a server to the group as a voter. Start it first with
'cairn server --name NAME --raft-addr HOST:PORT --bootstrap=false' and the
group's secrets file, then run this against the running group.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || addr == "" {
				return &usageError{fmt.Errorf("pass --name and --raft-addr of the server to add")}
			}
			if err := g.request(cmd.Context(), wire.OpClusterJoin, wire.ClusterJoinReq{Name: name, RaftAddr: addr}, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "server %s (%s) joined the group\n", name, addr)
			return nil
		},
	}
	join.Flags().StringVar(&name, "name", "", "name of the server to add")
	join.Flags().StringVar(&addr, "raft-addr", "", "its Raft address")
	var rmName string
	remove := &cobra.Command{
		Use:   "remove --name NAME",
		Short: "Remove a server from the group",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rmName == "" {
				return &usageError{fmt.Errorf("pass --name of the server to remove")}
			}
			if err := g.request(cmd.Context(), wire.OpClusterRemove, wire.ClusterRemoveReq{Name: rmName}, nil); err != nil {
				return err
			}
			fmt.Fprintf(g.out, "server %s removed from the group\n", rmName)
			return nil
		},
	}
	remove.Flags().StringVar(&rmName, "name", "", "name of the server to remove")
	c.AddCommand(join, remove)
	return c
}
