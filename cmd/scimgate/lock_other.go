//go:build !unix

package main

import "os"

// lockFile is a no-op where flock is unavailable: stop the gateway first.
func lockFile(path string) (unlock func(), err error) { return func() {}, nil }

// allocated is the file's size where block counts are unavailable.
func allocated(fi os.FileInfo) int64 { return fi.Size() }
