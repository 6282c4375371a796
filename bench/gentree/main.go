// Command gentree makes the tree that bench/e2e.sh backs up: by default
// 1 GiB, about 40% log-like text in files of 1-32 MiB, 40% random data in
// files of 1-64 MiB and 20% in 50,000 small files of 1-16 KiB in nested
// directories; with -one-file, one file like a disk image. The tree is the
// same for the same flags (a fixed seed), so runs on different days back
// up the same bytes.
//
//	go run ./bench/gentree -root /var/tmp/cairn-bench/tree
//	go run ./bench/gentree -mutate /var/tmp/cairn-bench/copy -fraction 0.05
package main

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/cairnbackup/cairn/sample"
)

func main() {
	root := flag.String("root", "", "directory to create; it must not exist")
	total := flag.Int64("size", 1<<30, "total bytes of file content")
	small := flag.Int("small-files", 50_000, "number of small files (1-16 KiB)")
	seed := flag.Uint64("seed", 1, "random seed")
	change := flag.String("mutate", "", "change about -fraction of the bytes of this existing tree instead (the incremental's changes)")
	fraction := flag.Float64("fraction", 0.05, "with -mutate: the share of the tree's bytes to change")
	oneFile := flag.Bool("one-file", false, "make one file of -size bytes instead (and 100 small files), like a disk image: random data, text and runs of zeros (no holes) in pieces of 1-64 MiB")
	flag.Parse()
	if *change != "" {
		if err := mutate(*change, *fraction, *seed); err != nil {
			fmt.Fprintln(os.Stderr, "gentree:", err)
			os.Exit(1)
		}
		return
	}
	if *root == "" {
		fmt.Fprintln(os.Stderr, "gentree: pass -root DIR")
		os.Exit(2)
	}
	if *oneFile {
		if err := runOneFile(*root, *total, *seed); err != nil {
			fmt.Fprintln(os.Stderr, "gentree:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(*root, *total, *small, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "gentree:", err)
		os.Exit(1)
	}
}

func run(root string, total int64, smallFiles int, seed uint64) error {
	if _, err := os.Lstat(root); err == nil {
		return fmt.Errorf("%s exists; remove it or choose another -root", root)
	}
	r := rand.New(rand.NewPCG(seed, seed^0xbe4c))

	// Small files first: their sizes lean to the small end, as real small
	// files do (1 KiB * 16^(u^1.5), a mean of about 4.3 KiB), so 50,000
	// of them are about 20% of 1 GiB.
	var smallBytes int64
	for i := range smallFiles {
		n := int(math.Round(1024 * math.Pow(16, math.Pow(r.Float64(), 1.5))))
		dir := filepath.Join(root, "small", fmt.Sprintf("d%02d", i%10), fmt.Sprintf("e%02d", i/10%10), fmt.Sprintf("f%02d", i/100%20))
		var data []byte
		if i%2 == 0 {
			data = sample.LogText(r, n)
		} else {
			data = sample.RandomBytes(r, n)
		}
		if err := write(filepath.Join(dir, fmt.Sprintf("file-%05d", i)), data); err != nil {
			return err
		}
		smallBytes += int64(n)
	}

	// The rest, half text and half random, in large files.
	rest := total - smallBytes
	textBytes, err := fill(rest/2, 32<<20, func(i, n int) error {
		p := filepath.Join(root, "logs", fmt.Sprintf("host-%02d", i%8), fmt.Sprintf("app-%03d.log", i))
		return write(p, sample.LogText(r, n))
	}, r)
	if err != nil {
		return err
	}
	randomBytes, err := fill(rest-textBytes, 64<<20, func(i, n int) error {
		p := filepath.Join(root, "data", fmt.Sprintf("set-%d", i%4), fmt.Sprintf("blob-%03d.bin", i))
		return write(p, sample.RandomBytes(r, n))
	}, r)
	if err != nil {
		return err
	}
	all := smallBytes + textBytes + randomBytes
	fmt.Printf("gentree: %s: %d bytes: text %d (%.0f%%), random %d (%.0f%%), %d small files %d (%.0f%%)\n",
		root, all, textBytes, pct(textBytes, all), randomBytes, pct(randomBytes, all), smallFiles, smallBytes, pct(smallBytes, all))
	return nil
}

// runOneFile makes root/image/disk.img, total bytes of content, and 100
// small files in root/etc. A disk
// image holds long runs of zeros written as data (never trimmed), which
// content-defined cuts can only end at the largest block.
func runOneFile(root string, total int64, seed uint64) error {
	if _, err := os.Lstat(root); err == nil {
		return fmt.Errorf("%s exists; remove it or choose another -root", root)
	}
	r := rand.New(rand.NewPCG(seed, seed^0xd15c))
	p := filepath.Join(root, "image", "disk.img")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	var kinds [3]int64
	for done := int64(0); done < total; {
		n := int(min(int64(1<<20+r.IntN(63<<20+1)), total-done))
		k := r.IntN(4) // random half the time, text and zeros a quarter each
		var data []byte
		switch k {
		case 0, 1:
			data, k = sample.RandomBytes(r, n), 0
		case 2:
			data, k = sample.LogText(r, n), 1
		default:
			data = make([]byte, n)
			k = 2
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		kinds[k] += int64(n)
		done += int64(n)
	}
	if err := f.Close(); err != nil {
		return err
	}
	// A few small files beside it, which the incremental's changes
	// (-mutate) add to and delete from.
	for i := range 100 {
		if err := write(filepath.Join(root, "etc", fmt.Sprintf("conf-%03d", i)), sample.LogText(r, 1024+r.IntN(15<<10))); err != nil {
			return err
		}
	}
	fmt.Printf("gentree: %s: one file of %d bytes: random %d (%.0f%%), text %d (%.0f%%), zeros %d (%.0f%%)\n",
		p, total, kinds[0], pct(kinds[0], total), kinds[1], pct(kinds[1], total), kinds[2], pct(kinds[2], total))
	return nil
}

// fill makes files of 1 MiB to max bytes until they hold budget bytes.
func fill(budget int64, max int, mk func(i, n int) error, r *rand.Rand) (int64, error) {
	var done int64
	for i := 0; done < budget; i++ {
		n := int(min(int64(1<<20+r.IntN(max-1<<20+1)), budget-done))
		if err := mk(i, n); err != nil {
			return done, err
		}
		done += int64(n)
	}
	return done, nil
}

func pct(a, b int64) float64 { return 100 * float64(a) / float64(b) }

func write(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
