package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"

	"github.com/cairnbackup/cairn/internal/buildinfo"
)

// newManCmd writes one man page per command of the tree it is part of, for
// the package (make deb). Hidden: an administrator reads the pages, not
// this. The date on the pages is $SOURCE_DATE_EPOCH's when set, so that
// the same commit builds the same pages.
func newManCmd(g *globals) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:    "man --dir DIR",
		Short:  "Write the man pages of every command into DIR",
		Hidden: true,
		Args:   noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return &usageError{fmt.Errorf("pass --dir DIR")}
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			unhostFlagDefaults(cmd.Root())
			return doc.GenManTreeFromOpts(cmd.Root(), doc.GenManTreeOptions{
				Path: dir,
				Header: &doc.GenManHeader{
					Section: "1",
					Source:  "Cairn " + buildinfo.Version(),
					Manual:  "Cairn Manual",
				},
				CommandSeparator: "-",
			})
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory to write NAME.1 files into")
	return c
}

// unhostFlagDefaults says "this host's name" for the defaults taken from
// the host name (a role's --name, dev's --client), which would otherwise
// name the build machine in every installed page.
func unhostFlagDefaults(root *cobra.Command) {
	host, _ := os.Hostname()
	if host == "" {
		return
	}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if f.DefValue == host || f.DefValue == sanitizeName(host) {
				f.DefValue = "this host's name"
			}
		})
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
