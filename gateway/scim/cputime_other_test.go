//go:build !unix

package scim

import (
	"testing"
	"time"
)

// cpuTime is only available where getrusage is (see cputime_unix_test.go).
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	tb.Skip("no getrusage on this platform to measure CPU time")
	return 0
}
