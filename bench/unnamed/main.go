// Command unnamed makes files the two ways a restore could, in a directory
// it is given, and prints the CPU seconds they cost: unnamed (O_TMPFILE)
// and linked into place once written, as the agent does so that a restore
// killed halfway leaves no partial file under a name, or under their names
// from the start (O_EXCL). bench/unnamed.sh runs it on new file systems.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

func cpu() time.Duration {
	var ru unix.Rusage
	_ = unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func main() {
	mode := flag.String("mode", "unnamed", "unnamed (O_TMPFILE, then linkat) or named (O_EXCL)")
	files := flag.Int("files", 50000, "files to make, in directories of -per")
	per := flag.Int("per", 1000, "files per directory")
	size := flag.Int("size", 4400, "bytes written to each file")
	flag.Parse()
	if flag.NArg() != 1 || (*mode != "unnamed" && *mode != "named") || *per < 1 {
		fmt.Fprintln(os.Stderr, "usage: unnamed [-mode unnamed|named] [-files N] [-per N] [-size BYTES] DIR")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *mode, *files, *per, make([]byte, *size)); err != nil {
		fmt.Fprintln(os.Stderr, "unnamed:", err)
		os.Exit(1)
	}
}

func run(root, mode string, files, per int, data []byte) error {
	t0, c0 := time.Now(), cpu()
	for d := 0; d*per < files; d++ {
		dir := filepath.Join(root, fmt.Sprintf("d%d", d))
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		dfd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		for i := d * per; i < min(files, (d+1)*per); i++ {
			if err := makeFile(dfd, fmt.Sprintf("f%d", i), mode, data); err != nil {
				unix.Close(dfd)
				return err
			}
		}
		unix.Close(dfd)
	}
	fmt.Printf("%s: %d files, %.2f s wall, %.2f CPU s\n", mode, files, time.Since(t0).Seconds(), (cpu() - c0).Seconds())
	return nil
}

func makeFile(dfd int, name, mode string, data []byte) error {
	var fd int
	var err error
	if mode == "unnamed" {
		fd, err = unix.Openat(dfd, ".", unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	} else {
		fd, err = unix.Openat(dfd, name, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Pwrite(fd, data, 0); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if mode == "unnamed" {
		if err := unix.Linkat(fd, "", dfd, name, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
	}
	return unix.Fchmod(fd, 0o644)
}
