package wire

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// Connect opens a role's NATS connection. It reconnects forever: a role
// outlives restarts of the NATS servers it talks to.
func Connect(url, name string, logger *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect(url,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.Timeout(5*time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("NATS connection lost", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { logger.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			logger.Warn("NATS error", "subject", subj, "err", err)
		}),
	)
	if err != nil {
		return nil, Errorf(CodeUnavailable, "start 'cairn dev' or 'cairn server', or pass the right --nats URL (or set CAIRN_NATS)",
			"cannot reach NATS at %s: %v", url, err)
	}
	return nc, nil
}
