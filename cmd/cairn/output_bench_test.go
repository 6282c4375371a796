package main

import (
	"fmt"
	"io"
	"os"
	"testing"
	"text/tabwriter"
)

// BenchmarkTableToAPipe prints 10,000 rows of 'cairn ls' to a pipe: through
// table (one buffer), and through a bare tabwriter, which is how tables
// were printed before and writes each cell and padding on its own. It
// reports the write calls a row takes.
func BenchmarkTableToAPipe(b *testing.B) {
	const rows = 10000
	row := []any{"-rw-r--r--", "root:root", "0 B", "2026-12-03 17:41:37", 5, "/tmp/probe/many/one/file-199999"}
	for _, how := range []string{"table", "bare-tabwriter"} {
		b.Run(how, func(b *testing.B) {
			r, w, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() { io.Copy(io.Discard, r); close(done) }()
			cw := &countingWriter{w: w}
			for b.Loop() {
				switch how {
				case "table":
					t := newTable(cw, "MODE", "OWNER", "SIZE", "MODIFIED", "BACKUP", "PATH")
					for range rows {
						t.row(row...)
					}
					if err := t.flush(); err != nil {
						b.Fatal(err)
					}
				default:
					tw := tabwriter.NewWriter(cw, 0, 4, 2, ' ', 0)
					for range rows {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", row...)
					}
					if err := tw.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(cw.writes)/float64(b.N*rows), "writes/row")
			w.Close()
			<-done
			r.Close()
		})
	}
}

type countingWriter struct {
	w      io.Writer
	writes int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	c.writes++
	return c.w.Write(p)
}
