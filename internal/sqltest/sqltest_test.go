package sqltest

import (
	"slices"
	"strconv"
	"strings"
	"testing"
)

// Each server starts, takes a table, keeps its rows across a restart.
func TestServers(t *testing.T) {
	for _, start := range []func(testing.TB) *Server{Postgres, MariaDB} {
		s := start(t)
		// Below the ephemeral range: no outgoing connection takes the
		// port while Restart has the server down.
		if p, err := strconv.Atoi(s.port); err != nil || p >= 32768 {
			t.Errorf("%s: port %q, want one below 32768", s, s.port)
		}
		s.Exec("create table t (id int primary key, v text);\ninsert into t values (1, 'a'), (2, 'b')")
		s.Restart()
		if got, want := s.Query("select id, v from t order by id"), []string{"1|a", "2|b"}; !slices.Equal(got, want) {
			t.Fatalf("%s: rows after a restart: %q, want %q", s, got, want)
		}
	}
}

// A server that went down without its clean shutdown (killed here) is
// reported by stop, so that Restart fails the test rather than pass off a
// crash (which may lose commits under the servers' relaxed durability
// settings) as a restart.
func TestUncleanStopReported(t *testing.T) {
	s := MariaDB(t)
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if err := signalGroup(cmd, "kill"); err != nil {
		t.Fatal(err)
	}
	<-done
	err := s.stop()
	if err == nil || !strings.Contains(err.Error(), `exited without logging "Shutdown complete"`) {
		t.Fatalf("stop after a kill: %v, want it reported as not clean", err)
	}
}
