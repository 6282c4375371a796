package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairnbackup/cairn/pki"
	"github.com/cairnbackup/cairn/wire"
)

func newCertCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "cert",
		Short: "Certificates: a CA, per-host certificates, a NATS server configuration",
		Long: `Make the certificates a deployment runs on, and the NATS server's
configuration with one user per role.

  cairn cert ca --out /etc/cairn/ca
  cairn cert issue --ca /etc/cairn/ca --name s1 --ip 10.0.0.1 --client --server --out /etc/cairn/s1
  cairn cert issue --ca /etc/cairn/ca --name nats --dns nats.example.net --out /etc/cairn/nats
  cairn cert issue --ca /etc/cairn/ca --name web1 --client --out /etc/cairn/web1

A backup server's certificate serves its Raft transport, which both dials and
listens, so it needs --client --server and the address in --raft-addr as
--ip or --dns. Roles that only connect out (agents, storage nodes' and the
admin's NATS connections) get --client alone; such a certificate cannot join
the Raft group even though the same CA signed it.

The same with openssl, for those who keep their own CA (the subject must be
O=Cairn, CN=NAME: the NATS server knows each role's user by it):
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=Cairn CA" -out ca.crt
  openssl ecparam -name prime256v1 -genkey -noout -out s1.key
  openssl req -new -key s1.key -subj "/O=Cairn/CN=s1" -out s1.csr
  printf 'subjectAltName=IP:10.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' > s1.ext
  openssl x509 -req -in s1.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 730 -sha256 -extfile s1.ext -out s1.crt`,
	}
	c.AddCommand(newCertCACmd(g), newCertIssueCmd(g), newCertRenewCmd(g), newNATSConfigCmd(g))
	return c
}

type certCAOpts struct {
	out  string
	name string
	days int
}

func newCertCACmd(g *globals) *cobra.Command {
	var o certCAOpts
	c := &cobra.Command{
		Use:   "ca --out DIR",
		Short: "Make a certificate authority (ECDSA P-256): DIR/ca.crt and DIR/ca.key (0600)",
		Long: `Make a certificate authority: DIR/ca.crt, which every host gets, and
DIR/ca.key (mode 0600), which stays where certificates are issued. It refuses
to replace an existing CA: that would orphan every certificate it signed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCertCA(o, g.out)
		},
	}
	f := c.Flags()
	f.StringVar(&o.out, "out", "", "directory for ca.crt and ca.key (created 0700)")
	f.StringVar(&o.name, "name", "Cairn CA", "the CA's common name")
	f.IntVar(&o.days, "days", int(pki.DefaultCAValidity/(24*time.Hour)), "days the CA is valid")
	return c
}

func runCertCA(o certCAOpts, out io.Writer) error {
	if o.out == "" {
		return &usageError{errors.New("pass --out DIR for the CA's files")}
	}
	if o.days < 1 {
		return &usageError{fmt.Errorf("--days %d: the CA must be valid for at least a day", o.days)}
	}
	ca, err := pki.CreateCA(o.out, o.name, time.Duration(o.days)*24*time.Hour)
	if err != nil {
		return certError(err)
	}
	fmt.Fprintf(out, "CA %q made in %s (valid until %s)\n", ca.Cert.Subject.CommonName, o.out, ca.Cert.NotAfter.Format("2006-01-02"))
	fmt.Fprintf(out, "  %s/%s: give it to every host (--tls-ca, --nats-ca)\n", o.out, pki.CACertFile)
	fmt.Fprintf(out, "  %s/%s: keep it here, offline if you can; it signs every certificate\n", o.out, pki.CAKeyFile)
	return nil
}

type certIssueOpts struct {
	ca, name, out  string
	ips, dns       []string
	client, server bool
	serverSet      bool // --server given explicitly
	days           int
}

func newCertIssueCmd(g *globals) *cobra.Command {
	var o certIssueOpts
	c := &cobra.Command{
		Use:   "issue --ca DIR --name HOST [--ip IP]... [--dns NAME]... [--client] [--server] --out DIR",
		Short: "Issue a host certificate signed by the CA: DIR/HOST.crt, DIR/HOST.key (0600) and DIR/ca.crt",
		Long: `Issue a certificate for one host, signed by the CA in --ca, into --out:
HOST.crt, HOST.key (mode 0600) and a copy of ca.crt.

Without --client the certificate is for a listening side (a NATS server); it
needs the addresses peers dial, as --ip or --dns (HOST itself counts when it
is a DNS name). --client alone makes a certificate for a role that connects
out (agent, storage node, admin). --client --server makes one for a backup
server: its Raft transport dials and listens. Existing files are never
replaced.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.serverSet = cmd.Flags().Changed("server")
			return runCertIssue(o, g.out)
		},
	}
	f := c.Flags()
	f.StringVar(&o.ca, "ca", "", "directory of the CA (ca.crt and ca.key, from 'cairn cert ca')")
	f.StringVar(&o.name, "name", "", "host name: the common name and the file names")
	f.StringArrayVar(&o.ips, "ip", nil, "an IP address the host is reached at; repeat for several")
	f.StringArrayVar(&o.dns, "dns", nil, "a DNS name the host is reached at; repeat for several")
	f.BoolVar(&o.client, "client", false, "allow client authentication (roles that connect out); alone, a client-only certificate")
	f.BoolVar(&o.server, "server", false, "allow server authentication (the default without --client)")
	f.StringVar(&o.out, "out", "", "directory for the certificate and key (created 0700)")
	f.IntVar(&o.days, "days", int(pki.DefaultCertValidity/(24*time.Hour)), "days the certificate is valid (at most the CA's remaining life)")
	return c
}

func runCertIssue(o certIssueOpts, out io.Writer) error {
	switch {
	case o.ca == "":
		return &usageError{errors.New("pass --ca DIR, the directory 'cairn cert ca' made")}
	case o.name == "":
		return &usageError{errors.New("pass --name HOST")}
	case o.out == "":
		return &usageError{errors.New("pass --out DIR for the certificate and key")}
	case o.days < 1:
		return &usageError{fmt.Errorf("--days %d: the certificate must be valid for at least a day", o.days)}
	}
	opts := pki.IssueOptions{Name: o.name, DNS: o.dns, Client: o.client, Server: o.server || !o.client,
		Validity: time.Duration(o.days) * 24 * time.Hour}
	if o.serverSet && !o.server && !o.client {
		return &usageError{errors.New("--server=false without --client leaves the certificate no use: pass --client")}
	}
	for _, s := range o.ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return &usageError{fmt.Errorf("--ip %q is not an IP address", s)}
		}
		opts.IPs = append(opts.IPs, ip)
	}
	if err := pki.ValidateName(o.name); err != nil {
		return &usageError{err}
	}
	ca, err := pki.LoadCA(o.ca)
	if err != nil {
		return certError(err)
	}
	is, err := ca.Issue(opts, o.out)
	if err != nil {
		return certError(err)
	}
	var uses []string
	if opts.Server {
		uses = append(uses, "server")
	}
	if opts.Client {
		uses = append(uses, "client")
	}
	fmt.Fprintf(out, "certificate for %s (%s authentication", o.name, strings.Join(uses, " and "))
	if len(is.SANs) > 0 {
		fmt.Fprintf(out, "; valid for %s", strings.Join(is.SANs, ", "))
	}
	fmt.Fprintf(out, ")\n  cert: %s\n  key:  %s (keep it on %s only)\n  ca:   %s\n", is.Cert, is.Key, o.name, is.CA)
	return nil
}

type certRenewOpts struct {
	ca     string
	days   int
	within int
}

func newCertRenewCmd(g *globals) *cobra.Command {
	var o certRenewOpts
	c := &cobra.Command{
		Use:   "renew --ca DIR [--within DAYS] HOST.crt...",
		Short: "Renew host certificates: a new key and certificate for the same name, addresses and uses",
		Long: `Renew certificates the CA in --ca issued: each HOST.crt, and the key HOST.key
beside it, is replaced by a new certificate for the same name, addresses and
uses, on a new key, valid for --days from now. Run it where ca.key is,
on the directories 'cairn cert issue --out' made there; the files keep
their mode, owner and group.

Then copy HOST.crt and HOST.key to the host, as when it was issued, and
make the role read them: 'systemctl reload cairn-server' (or
cairn-storagenode, cairn-agent: SIGHUP) for a Cairn role, which presents
the new certificate at once; 'nats-server --signal reload' for a NATS
server. Nothing stops, nothing else changes.

With --within DAYS only the certificates that expire within DAYS are
renewed, so a daily cron job can run it on every host directory:

  cairn cert renew --ca /etc/cairn/ca --within 30 /etc/cairn/hosts/*/*.crt

(ca.crt, the CA's own certificate, is skipped: a CA is not renewed in place.)
Every role exports cairn_cert_expiry_timestamp_seconds for each certificate
it loaded and warns in its log 30 days before one expires.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return &usageError{errors.New("name the certificates to renew: HOST.crt files 'cairn cert issue' wrote")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runCertRenew(o, args, time.Now(), g.out)
		},
	}
	f := c.Flags()
	f.StringVar(&o.ca, "ca", "", "directory of the CA that issued them (ca.crt and ca.key)")
	f.IntVar(&o.days, "days", int(pki.DefaultCertValidity/(24*time.Hour)), "days the new certificates are valid (at most the CA's remaining life)")
	f.IntVar(&o.within, "within", 0, "renew only certificates that expire within this many days (0: every one named)")
	return c
}

func runCertRenew(o certRenewOpts, certs []string, now time.Time, out io.Writer) error {
	switch {
	case o.ca == "":
		return &usageError{errors.New("pass --ca DIR, the directory of the CA that issued the certificates")}
	case o.days < 1:
		return &usageError{fmt.Errorf("--days %d: the certificate must be valid for at least a day", o.days)}
	case o.within < 0:
		return &usageError{fmt.Errorf("--within %d: pass a number of days, or 0 to renew every certificate named", o.within)}
	}
	ca, err := pki.LoadCA(o.ca)
	if err != nil {
		return certError(err)
	}
	var errs []error
	for _, path := range certs {
		if filepath.Base(path) == pki.CACertFile {
			continue
		}
		if o.within > 0 {
			c, err := pki.ReadCertificate(path)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if left := c.NotAfter.Sub(now); left > time.Duration(o.within)*24*time.Hour {
				fmt.Fprintf(out, "%s: %s valid until %s (%d days), not renewed\n", path, c.Subject.CommonName, c.NotAfter.UTC().Format("2006-01-02"), int(left.Hours()/24))
				continue
			}
		}
		r, err := ca.Renew(path, time.Duration(o.days)*24*time.Hour)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fmt.Fprintf(out, "%s: renewed %s, valid until %s (was %s); copy %s and %s to %s and reload its role\n", path, r.New.Subject.CommonName,
			r.New.NotAfter.UTC().Format("2006-01-02"), r.Old.NotAfter.UTC().Format("2006-01-02"), filepath.Base(r.Cert), filepath.Base(r.Key), r.New.Subject.CommonName)
	}
	if len(errs) > 0 {
		return certError(errors.Join(errs...))
	}
	return nil
}

// certError gives a certificate operation's error its hint.
func certError(err error) error {
	var hint string
	var missing *pki.MissingCAError
	switch {
	case errors.Is(err, pki.ErrExists):
		hint = "existing certificates and keys are never replaced; remove the file yourself or choose another --out"
	case errors.As(err, &missing):
		hint = "pass --ca the directory 'cairn cert ca --out DIR' made, on the machine that holds ca.key"
	default:
		hint = "correct what the message names; 'cairn cert --help' shows the steps"
	}
	return wire.Errorf(wire.CodeInvalidArgument, hint, "%w", err)
}
