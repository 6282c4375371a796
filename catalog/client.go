package catalog

// Clients: an agent registers under its name (OpRegisterClient) each time it
// starts; a repeat keeps when the client first registered and its default
// pool, which an administrator may have set meanwhile.

func (a *applier) registerClient(c *Client) error {
	if err := validName("client", c.Name); err != nil {
		return err
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
	}
	return putJSON(a.tx, bClients, []byte(n.Name), &n)
}
