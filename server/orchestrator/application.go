package orchestrator

import (
	"github.com/cairnbackup/cairn/catalog"
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
// run as given, before a job is made for it. The catalog checks a policy's
// the same way (catalog.Application.Check).
func checkApplication(a wire.Application, paths []string) error {
	app := catalogApplication(a)
	if err := app.Check(paths); err != nil {
		return CatalogError(err)
	}
	return nil
}

// WireApplication is a job's application as its orders carry it: the
// scheduler starts a policy's run with the policy's steps and sources.
func WireApplication(a catalog.Application) wire.Application { return wireApplication(a) }
