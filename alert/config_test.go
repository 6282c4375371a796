package alert

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairnbackup/cairn/internal/configfile"
)

// holder is a role's config file with an alerts section, as the server's
// will be.
type holder struct {
	Alerts Config `json:"alerts" config:"fileonly"`
}

// The README's example of the section is a valid config file section, as
// a role's config file reads it.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "### Alerts\n")
	if !ok {
		t.Fatal("README.md has no section ### Alerts")
	}
	_, rest, ok = strings.Cut(rest, "```json\n")
	if !ok {
		t.Fatal("README.md's section Alerts has no json block")
	}
	block, _, _ := strings.Cut(rest, "```\n")
	var h holder
	warns, err := configfile.Decode([]byte("{\n"+block+"}\n"), &h)
	if err != nil || len(warns) > 0 {
		t.Fatalf("README.md's alerts section: %v %v", err, warns)
	}
	if err := h.Alerts.Validate(); err != nil {
		t.Fatalf("README.md's alerts section: %v", err)
	}
	c := h.Alerts
	if c.RepeatInterval != 4*time.Hour || len(c.Webhooks) != 1 || c.Webhooks[0].TokenFile == "" || len(c.Commands) != 1 ||
		len(c.Commands[0].Kinds) != 3 || c.Commands[0].Timeout != 30*time.Second {
		t.Errorf("README.md's alerts section read as %+v", c)
	}
}

// Validate names each bad field by its path in the file and says what to
// do.
func TestValidate(t *testing.T) {
	ok := Config{
		Webhooks: []WebhookConfig{{Name: "ops", URL: "https://alerts.example/x"}},
		Commands: []CommandConfig{{Name: "mail", Path: "/usr/bin/true"}},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, tc := range []struct {
		change func(c *Config)
		field  string
		says   string
	}{
		{func(c *Config) { c.RepeatInterval = -time.Second }, "repeat_interval", "negative"},
		{func(c *Config) { c.QueueSize = -1 }, "queue_size", "negative"},
		{func(c *Config) { c.Webhooks[0].Name = "" }, "webhooks[0].name", "name it"},
		{func(c *Config) { c.Webhooks[0].Name = "ops team" }, "webhooks[0].name", "letters, digits"},
		{func(c *Config) { c.Commands[0].Name = "ops" }, "commands[0].name", "also the name of webhooks[0]"},
		{func(c *Config) { c.Webhooks[0].URL = "" }, "webhooks[0].url", "give the http:// or https:// URL"},
		{func(c *Config) { c.Webhooks[0].URL = "ftp://x/y" }, "webhooks[0].url", "no http:// or https:// URL"},
		{func(c *Config) { c.Webhooks[0].URL = "alerts.example/x" }, "webhooks[0].url", "no http:// or https:// URL"},
		{func(c *Config) { c.Webhooks[0].URL, c.Webhooks[0].CAFile = "http://x/y", "/etc/ca.pem" }, "webhooks[0].ca", "needs an https:// URL"},
		{func(c *Config) { c.Webhooks[0].Timeout = -1 }, "webhooks[0].timeout", "negative"},
		{func(c *Config) { c.Webhooks[0].Attempts = -1 }, "webhooks[0].attempts", "negative"},
		{func(c *Config) { c.Webhooks[0].Backoff, c.Webhooks[0].MaxBackoff = time.Minute, time.Second }, "webhooks[0].max_backoff", "shorter than backoff"},
		{func(c *Config) { c.Webhooks[0].Kinds = []string{"job_failed", "rpo"} }, "webhooks[0].kinds[1]", "no kind of alert"},
		{func(c *Config) { c.Commands[0].Path = "mail" }, "commands[0].path", "not an absolute path"},
		{func(c *Config) { c.Commands[0].Timeout = -1 }, "commands[0].timeout", "negative"},
		{func(c *Config) { c.Commands[0].Backoff = -1 }, "commands[0].backoff", "negative"},
	} {
		c := ok
		c.Webhooks = append([]WebhookConfig(nil), ok.Webhooks...)
		c.Commands = append([]CommandConfig(nil), ok.Commands...)
		tc.change(&c)
		err := c.Validate()
		var fe *configfile.FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Validate = %v, want a FieldError of %s saying %q", tc.field, err, tc.field, tc.says)
		}
		if _, err := New(c, Options{}); err == nil {
			t.Errorf("%s: New took a config Validate refuses", tc.field)
		}
	}
	// Under the section's name, as a role's Validate puts it.
	err := configfile.In("alerts", (&Config{QueueSize: -1}).Validate())
	if err == nil || !strings.HasPrefix(err.Error(), "alerts.queue_size: ") {
		t.Errorf("In(alerts) = %v", err)
	}
}

// Every field of the section has a doc comment, which is what a role's
// commented example (cairn config example) writes above it, and the example
// of a full section reads back as it was written.
func TestConfigExample(t *testing.T) {
	schema := configfile.SchemaOf(reflect.TypeFor[Config]())
	docs, err := configfile.ReadDocs(func(string) string { return "." }, schema)
	if err != nil {
		t.Fatal(err)
	}
	full := Config{
		RepeatInterval: time.Hour, QueueSize: 10,
		Webhooks: []WebhookConfig{{Name: "ops", URL: "https://a.example/x", TokenFile: "/t", CAFile: "/ca", Timeout: time.Second,
			Attempts: 3, Backoff: time.Second, MaxBackoff: time.Minute, Kinds: []string{"job_failed"}}},
		Commands: []CommandConfig{{Name: "mail", Path: "/bin/mail", Args: []string{"a"}, Timeout: time.Second,
			Attempts: 2, Backoff: time.Second, MaxBackoff: time.Minute, Kinds: []string{"rpo_breach"}}},
	}
	ex := configfile.Example{
		Values: []any{&full}, Defaults: []any{&Config{}}, Docs: docs,
		Live: []string{"repeat_interval", "queue_size", "webhooks", "commands"},
	}
	out, err := ex.Write()
	if err != nil {
		t.Fatal(err)
	}
	var back Config
	if warns, err := configfile.Decode(out, &back); err != nil || len(warns) > 0 {
		t.Fatalf("%v %v:\n%s", err, warns, out)
	}
	if !reflect.DeepEqual(back, full) {
		t.Errorf("read back %+v, want %+v", back, full)
	}
	if err := back.Validate(); err != nil {
		t.Error(err)
	}
}
