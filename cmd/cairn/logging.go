package main

import (
	"encoding/json"
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

// roleFields are what every role's config file may hold beside the fields
// of the role's own Config.
type roleFields struct {
	LogLevel  string `json:"log_level"`
	LogFormat string `json:"log_format"`
}

var roleFieldNames = []string{"log_level", "log_format"}

// withoutRoleFields returns a config file's JSON without the fields of
// roleFields, for decoding into the role's Config, which refuses fields it
// does not know. A file that has none is returned as it is, so the offsets
// in a decode error stay those of the file.
func withoutRoleFields(data []byte) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return data, nil // the role's decoder says what is wrong
	}
	found := false
	for _, name := range roleFieldNames {
		if _, ok := fields[name]; ok {
			delete(fields, name)
			found = true
		}
	}
	if !found {
		return data, nil
	}
	return json.Marshal(fields)
}

// readRoleFields reads the role-wide fields of a config file.
func readRoleFields(path string) (roleFields, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return roleFields{}, err
	}
	return decodeRoleFields(path, data)
}

// decodeRoleFields picks the role-wide fields out of a config file's JSON;
// the role's own decoder reports anything else wrong with the file.
func decodeRoleFields(path string, data []byte) (roleFields, error) {
	var rf roleFields
	var fields map[string]json.RawMessage
	if json.Unmarshal(data, &fields) != nil {
		return rf, nil
	}
	for name, dst := range map[string]*string{"log_level": &rf.LogLevel, "log_format": &rf.LogFormat} {
		if raw, ok := fields[name]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				return rf, fmt.Errorf("config file %s: %s: %w", path, name, err)
			}
		}
	}
	return rf, nil
}
