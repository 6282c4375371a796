package catalog

// Clients: an agent registers under its name (OpRegisterClient) each time it
// starts; a repeat keeps when the client first registered and its default
// pool, which an administrator may have set meanwhile. An agent that
// reports its labels replaces them, so its config is what counts, and one
// whose config has none clears them; an agent older than labels reports
// nothing and keeps them. Labels are checked as a policy's are, since
// policies select clients by them.

func (a *applier) registerClient(c *Client) error {
	if err := validName("client", c.Name); err != nil {
		return err
	}
	for k, v := range c.Labels {
		if err := validLabel(k, v); err != nil {
			return refuse(CodeInvalidArgument, "fix the labels in the agent's config", "client %s: %v", c.Name, err)
		}
	}
	old, err := a.client(c.Name)
	if err != nil {
		return err
	}
	n := *c
	n.Registered, n.LastSeen = a.now, a.now
	if old != nil {
		n.Registered = old.Registered
		if n.DefaultPool == "" {
			n.DefaultPool = old.DefaultPool
		}
		if !n.LabelsReported {
			n.Labels = old.Labels
		}
	}
	n.LabelsReported = false
	if len(n.Labels) == 0 {
		n.Labels = nil
	}
	return putJSON(a.tx, bClients, []byte(n.Name), &n)
}
