package catalog

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
