package main

import (
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/cairnbackup/cairn/sample"
)

// mutate changes about fraction of a tree's bytes the way a day changes a
// server's files, the same way for the same seed: 45% of the budget as
// regions overwritten in place inside files of 1 MiB or more (a database's
// pages, a disk image's blocks, a rewritten section of a document), of
// sizes spread evenly on a log scale from 4 KiB to 4 MiB (as many of 4-8
// KiB as of 2-4 MiB, so most places change a little and most changed
// bytes lie in the larger regions), 35% appended to such files (logs, mailboxes),
// 20% as new small files; and 1% of the small files deleted. It prints the
// bytes written, the changed bytes an incremental must store.
func mutate(root string, fraction float64, seed uint64) error {
	var large, small []string
	var total int64
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		if info.Size() >= 1<<20 {
			large = append(large, p)
		} else {
			small = append(small, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(large)
	slices.Sort(small)
	if len(large) == 0 || len(small) == 0 {
		return fmt.Errorf("%s has no large or no small files to change", root)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	budget := int64(fraction * float64(total))
	var inPlace, appended, created, regions int64
	for inPlace < budget*45/100 {
		p := large[r.IntN(len(large))]
		st, err := os.Stat(p)
		if err != nil {
			return err
		}
		n := int(math.Exp2(12 + 10*r.Float64())) // 2^12..2^22
		n = min(n, int(st.Size()/2))
		at := r.Int64N(st.Size() - int64(n))
		if err := writeAt(p, sample.RandomBytes(r, n), at); err != nil {
			return err
		}
		inPlace += int64(n)
		regions++
	}
	for appended < budget*35/100 {
		p := large[r.IntN(len(large))]
		n := 64<<10 + r.IntN(448<<10)
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = f.Write(sample.LogText(r, n))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		appended += int64(n)
	}
	for i := 0; created < budget*20/100; i++ {
		n := 1<<10 + r.IntN(15<<10)
		p := filepath.Join(filepath.Dir(small[r.IntN(len(small))]), fmt.Sprintf("new-%d-%05d", seed, i))
		if err := write(p, sample.LogText(r, n)); err != nil {
			return err
		}
		created += int64(n)
	}
	deleted := 0
	for _, i := range r.Perm(len(small))[:max(1, len(small)/100)] {
		if err := os.Remove(small[i]); err != nil {
			return err
		}
		deleted++
	}
	fmt.Printf("gentree: changed %d bytes of %d: %d in place (%d regions), %d appended, %d in new files; %d small files deleted\n",
		inPlace+appended+created, total, inPlace, regions, appended, created, deleted)
	return nil
}

func writeAt(path string, data []byte, at int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, at)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
