package orchestrator

import (
	"path"

	"github.com/cairnbackup/cairn/catalog"
	"github.com/cairnbackup/cairn/fileindex"
	"github.com/cairnbackup/cairn/wire"
)

// A backup's application steps and command sources travel from the start
// request through the catalog's job to the agent's order unchanged: the
// catalog and the wire declare the same shape, and these convert it, held
// by TestApplicationIsCarried. The agent alone decides whether a command
// may run (its allow-list); the servers only check the request's form.

func catalogApplication(a wire.Application) catalog.Application {
	var out catalog.Application
	for _, s := range a.Before {
		out.Before = append(out.Before, catalog.AppStep(s))
	}
	for _, s := range a.After {
		out.After = append(out.After, catalog.AppStep(s))
	}
	for _, s := range a.Sources {
		out.Sources = append(out.Sources, catalog.CommandSource(s))
	}
	return out
}

func wireApplication(a catalog.Application) wire.Application {
	var out wire.Application
	for _, s := range a.Before {
		out.Before = append(out.Before, wire.AppStep(s))
	}
	for _, s := range a.After {
		out.After = append(out.After, wire.AppStep(s))
	}
	for _, s := range a.Sources {
		out.Sources = append(out.Sources, wire.CommandSource(s))
	}
	return out
}

// checkApplication refuses a request whose steps or sources cannot be
// run as given, before a job is made for it.
func checkApplication(a wire.Application, paths []string) error {
	for _, steps := range [][]wire.AppStep{a.Before, a.After} {
		for _, s := range steps {
			if s.Command == "" {
				return wire.Errorf(wire.CodeInvalidArgument, "give each --before and --after a command", "an application step has no command")
			}
			if s.Timeout < 0 {
				return wire.Errorf(wire.CodeInvalidArgument, "give a positive timeout, or none for the agent's default", "application step %q has a negative timeout", s.Command)
			}
		}
	}
	seen := map[fileindex.Path]bool{}
	for _, s := range a.Sources {
		p := string(s.Path)
		if s.Command == "" || !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
			return wire.Errorf(wire.CodeInvalidArgument, "give a command source as PATH=COMMAND, PATH the absolute path the output is stored as",
				"command source %q=%q: it needs a clean absolute path and a command", fileindex.Escape(p), s.Command)
		}
		if seen[s.Path] {
			return wire.Errorf(wire.CodeInvalidArgument, "give each command source its own path", "two command sources are stored as %s", fileindex.Escape(p))
		}
		seen[s.Path] = true
		if s.Timeout < 0 {
			return wire.Errorf(wire.CodeInvalidArgument, "give a positive timeout, or none", "command source %s has a negative timeout", fileindex.Escape(p))
		}
		for _, root := range paths {
			if fileindex.Within(p, root) || fileindex.Within(root, p) {
				return wire.Errorf(wire.CodeInvalidArgument, "store a command source outside the paths the backup walks, where no file of the walk can take its place",
					"command source %s and %s, a path of the backup, lie one inside the other", fileindex.Escape(p), fileindex.Escape(root))
			}
		}
	}
	return nil
}
