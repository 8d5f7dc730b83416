//go:build unix

package main

import (
	"os"
	"syscall"
)

// withView calls fn with the first n bytes of the file mapped read-only.
// The caller indexes it with bounds checks (a Go slice), and n is within
// the file, so reading it cannot fault. The file is read sequentially first
// (prefetch): the walk over the view visits pages in tree order.
func withView(path string, n int64, fn func([]byte) error) error {
	prefetch(path, n)
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	view, err := syscall.Mmap(int(f.Fd()), 0, int(n), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return err
	}
	defer syscall.Munmap(view)
	return fn(view)
}
