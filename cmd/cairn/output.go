package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cairnbackup/cairn/fileindex"
)

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table prints aligned columns for people. The tabwriter writes each cell
// and each run of padding on its own: straight to stdout that was a dozen
// write calls a row, most of the time 'cairn ls' took over a directory of
// 200,000 files.
type table struct {
	tw  *tabwriter.Writer
	out *bufio.Writer
}

func newTable(w io.Writer, headers ...string) *table {
	out := bufio.NewWriterSize(w, 64<<10)
	t := &table{tw: tabwriter.NewWriter(out, 0, 4, 2, ' ', 0), out: out}
	t.row(toAny(headers)...)
	return t
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

func (t *table) row(cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = printable(fmt.Sprint(c))
	}
	fmt.Fprintln(t.tw, strings.Join(parts, "\t"))
}

func (t *table) flush() error {
	if err := t.tw.Flush(); err != nil {
		return err
	}
	return t.out.Flush()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func humanTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func humanDuration(d time.Duration) string {
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func rate(bytes int64, d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f MB/s", float64(bytes)/1e6/d.Seconds())
}

// isTerminal reports whether w is a character device, where progress lines
// that rewrite themselves make sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// printable returns s as it is safe to show on a terminal and unambiguous
// to read (fileindex.Escape): file names come from the clients' disks (and
// from volumes of unknown origin), and every name reads back to exactly one
// byte string, which the commands that take a path accept
// (fileindex.Unescape).
func printable(s string) string { return fileindex.Escape(s) }

// printableLog shows a line of a job log. Whoever writes one quotes a path
// as fileindex.Escape writes it, backslashes doubled, so a backslash is left
// as it is, and the name reads as 'cairn ls' prints it; anything else a
// terminal would obey is escaped all the same, should a writer not have.
func printableLog(s string) string {
	parts := strings.Split(s, `\`)
	for i, p := range parts {
		parts[i] = printable(p)
	}
	return strings.Join(parts, `\`)
}
