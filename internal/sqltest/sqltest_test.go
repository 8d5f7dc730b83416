package sqltest

import (
	"slices"
	"testing"
)

// Each server starts, takes a table, keeps its rows across a restart.
func TestServers(t *testing.T) {
	for _, start := range []func(testing.TB) *Server{Postgres, MariaDB} {
		s := start(t)
		s.Exec("create table t (id int primary key, v text);\ninsert into t values (1, 'a'), (2, 'b')")
		s.Restart()
		if got, want := s.Query("select id, v from t order by id"), []string{"1|a", "2|b"}; !slices.Equal(got, want) {
			t.Fatalf("%s: rows after a restart: %q, want %q", s, got, want)
		}
	}
}
