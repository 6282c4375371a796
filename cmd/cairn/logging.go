package main

import (
	"fmt"
	"io"
	"log/slog"
)

// logFormatUsage says what --log-format takes.
const logFormatUsage = "text, or json for a log shipper: one JSON object a line (or log_format in the config file)"

// newLogHandler is a role's log handler in the format asked for: slog's
// text for people, or its JSON (time, level, msg and the attributes as
// fields) for log shippers.
func newLogHandler(w io.Writer, format string, opts *slog.HandlerOptions) (slog.Handler, error) {
	switch format {
	case "text", "":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, &usageError{fmt.Errorf("log format %q: use text or json", format)}
}
