//go:build !unix

package main

import (
	"io"
	"os"
)

// withView calls fn with the first n bytes of the file, read into memory
// (the gateway is deployed on Linux, where they are mapped instead).
func withView(path string, n int64, fn func([]byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	view := make([]byte, n)
	if _, err := io.ReadFull(f, view); err != nil {
		return err
	}
	return fn(view)
}
