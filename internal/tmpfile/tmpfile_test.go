package tmpfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenLeavesNoName: the file reads back what was written, and its
// directory holds no entry for it, open or closed; also where the
// filesystem has no O_TMPFILE, and the name is removed at once.
func TestOpenLeavesNoName(t *testing.T) {
	t.Run("unnamed", func(t *testing.T) { openLeavesNoName(t) })
	t.Run("named and removed", func(t *testing.T) {
		defer func(o func(string) (int, error)) { openUnnamed = o }(openUnnamed)
		tried := false
		openUnnamed = func(string) (int, error) { tried = true; return -1, unix.EOPNOTSUPP }
		openLeavesNoName(t)
		if !tried {
			t.Fatal("Open did not try an unnamed file first")
		}
	})
}

func openLeavesNoName(t *testing.T) {
	dir := t.TempDir()
	f, err := Open(dir, "scratch-*", "scratch file")
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the directory holds %v while the file is open", ents)
	}
	if _, err := f.WriteString("scratch"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != "scratch" {
		t.Fatalf("read back %q, %v", b, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("the directory holds %v after the close", ents)
	}
}

// TestOpenInAMissingDirectory says which directory and what for.
func TestOpenInAMissingDirectory(t *testing.T) {
	dir := t.TempDir() + "/no/such"
	_, err := Open(dir, "scratch-*", "scratch file")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing directory: %v", err)
	}
	// On the file's name, as a write's error would be: a caller tells by
	// the path which directory it was.
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Path != dir+"/(scratch file)" {
		t.Fatalf("the error does not say where and what the file was for: %v", err)
	}
}

// Only the answers of a file system or kernel without unnamed files fall
// back to a named one: a refusal (no permission, no room) is an error.
func TestUnsupportedIsNoUnnamedFilesHere(t *testing.T) {
	for _, err := range []error{unix.EOPNOTSUPP, unix.EISDIR, unix.EINVAL, fmt.Errorf("open: %w", unix.EOPNOTSUPP)} {
		if !Unsupported(err) {
			t.Errorf("%v: not taken for no unnamed files", err)
		}
	}
	for _, err := range []error{nil, unix.EACCES, unix.ENOSPC, unix.EROFS} {
		if Unsupported(err) {
			t.Errorf("%v: taken for no unnamed files", err)
		}
	}
}
