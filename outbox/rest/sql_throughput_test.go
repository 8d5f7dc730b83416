package rest_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/internal/sqltest"
	"github.com/scimgate/scimgate/outbox"
	"github.com/scimgate/scimgate/outbox/rest"
)

// The figures of docs/performance.md ("Into PostgreSQL (`type: sql`)"):
//
//	go test ./outbox/rest -run '^$' -bench SQLThroughput -benchtime 5000x
//	SCIMGATE_BENCH=1 go test ./outbox/rest -run TestSQLBackfill -v -timeout 10m

// sqlPerfSchema is the example's app_users table (docs/actions.md).
const sqlPerfSchema = `create table app_users (
  id bigserial primary key, login text not null unique, email text, first_name text,
  last_name text, title text, disabled boolean not null default false,
  manager_id bigint references app_users(id) on delete set null)`

// sqlUpsert is the action measured: the example's user.created, one
// statement (an upsert by login returning the row's id, saved to the id
// map), in one database transaction per event.
func sqlUpsert(dsn, event, extra string) string {
	return `driver: postgres
dsn: "` + dsn + `"
` + extra + `actions:
  ` + event + `:
    - name: upsert
      sql: |
        INSERT INTO app_users (login, email, first_name, last_name, title, disabled)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (login) DO UPDATE SET email = excluded.email, first_name = excluded.first_name,
          last_name = excluded.last_name, title = excluded.title, disabled = excluded.disabled
        RETURNING id
      args: [record.login, lower(record.email), record.first_name, record.last_name, record.title, '!record.active']
      save: {id: row.id}
`
}

// pgSettings says how the test's PostgreSQL commits (internal/sqltest
// starts it with fsync and synchronous_commit off).
func pgSettings(pg *sqltest.Server) string {
	var parts []string
	for _, s := range []string{"fsync", "synchronous_commit", "full_page_writes", "server_version"} {
		parts = append(parts, s+"="+strings.Join(pg.Query("show "+s), ""))
	}
	return strings.Join(parts, " ")
}

// pgCPU is the CPU in nanoseconds the PostgreSQL instance's processes
// have used (Linux /proc, 100 ticks/s): the postmaster's own and its reaped
// children's, plus that of every process pg_stat_activity lists (backends
// and background processes). -1 when /proc cannot tell.
func pgCPU(pg *sqltest.Server) int64 {
	stat := func(pid string) []string {
		b, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return nil
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			return nil
		}
		return strings.Fields(string(b)[i+1:]) // [0] is field 3 (state)
	}
	ticks := func(f []string, fields ...int) int64 {
		var n int64
		for _, k := range fields {
			v, _ := strconv.ParseInt(f[k-3], 10, 64)
			n += v
		}
		return n
	}
	var total int64
	parent := ""
	for _, pid := range pg.Query("select pid from pg_stat_activity") {
		f := stat(pid)
		if len(f) < 15 {
			return -1
		}
		total += ticks(f, 14, 15)
		parent = f[1]
	}
	f := stat(parent)
	if len(f) < 15 {
		return -1
	}
	total += ticks(f, 14, 15, 16, 17)
	return total * int64(10*time.Millisecond)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// checkIDMap fails unless the id map holds an app id for User/id.
func checkIDMap(t testing.TB, d *outbox.Dispatcher, id string) {
	t.Helper()
	var entry map[string]any
	if err := d.State("app").View(func(tx *outbox.StateTx) error {
		v, err := tx.Get(rest.SpaceIDs, []byte("User/"+id))
		if err != nil || v == nil {
			return fmt.Errorf("no id-map entry for User/%s (%v)", id, err)
		}
		return json.Unmarshal(v, &entry)
	}); err != nil || entry["id"] == nil {
		t.Fatalf("id map: %v %v", entry, err)
	}
}

// BenchmarkSQLThroughput: b.N user.created events (one new user each) are
// committed to a real bbolt file (cmd/scimgate's options, fsync on) first;
// then a real Dispatcher with the sql transport delivers them into a real
// PostgreSQL (internal/sqltest), each event in one database transaction:
// the example's upsert by login, its RETURNING id saved to the id map
// (committed durably to bbolt before the delivery is done). The clock runs
// from Run to the last event delivered. The table then holds b.N rows.
func BenchmarkSQLThroughput(b *testing.B) {
	for _, c := range []struct {
		name  string
		conc  int
		extra string
	}{
		{"concurrency=4/pool=4", 4, ""},
		{"concurrency=32/pool=4", 32, ""},
		{"concurrency=32/pool=16", 32, "max_open_conns: 16\nmax_idle_conns: 16\n"},
	} {
		b.Run(c.name, func(b *testing.B) {
			pg := sqltest.Postgres(b)
			pg.Exec(sqlPerfSchema)
			db := openCmdDB(b)
			cfg := outbox.DefaultConfig()
			cfg.Concurrency = c.conc
			cfg.Targets = []outbox.Target{sqlTarget(b, sqlUpsert(pg.DSN, "user.created", c.extra))}
			cfg.Transports = map[string]outbox.Transport{outbox.TypeSQL: rest.SQLTransport()}
			d := newDispatcher(b, db, cfg)
			for done := 0; done < b.N; {
				err := db.Update(func(tx *bolt.Tx) error {
					for i := 0; i < 5000 && done < b.N; i++ {
						id, rec := benchUser(done)
						ev := outbox.Event{Type: "user.created", Resources: []string{"User/" + id}, Data: json.RawMessage(`{"user":` + rec + `}`)}
						if _, err := outbox.Enqueue(tx, ev, time.Now()); err != nil {
							return err
						}
						done++
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			settings, load0 := pgSettings(pg), loadAvg()
			b.ResetTimer()
			pgCPU0 := pgCPU(pg)
			cpu := cpuTime()
			start := time.Now()
			runDispatcher(b, d)
			for {
				st := targetStatus(b, d)
				if st.DeadLetters != 0 {
					b.Fatalf("dead letters: %+v", st)
				}
				if int(st.Delivered) == b.N && st.Backlog == 0 {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			el := time.Since(start)
			b.StopTimer()
			cpuNs := cpuTime() - cpu
			pgNs := pgCPU(pg) - pgCPU0
			if got := pg.Query("select count(*), count(distinct login) from app_users"); len(got) != 1 || got[0] != fmt.Sprintf("%d|%d", b.N, b.N) {
				b.Fatalf("app_users holds %q rows|logins, want %d", got, b.N)
			}
			lastID, _ := benchUser(b.N - 1)
			checkIDMap(b, d, lastID)
			b.Logf("%d events in %v; postgres %s; sessions opened on app %s; load average %s before, %s after", b.N, el.Round(time.Millisecond), settings,
				strings.Join(pg.Query("select sessions from pg_stat_database where datname = 'app'"), ""), load0, loadAvg())
			b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
			b.ReportMetric(float64(b.N)/el.Seconds(), "statements/s") // one statement per event
			b.ReportMetric(float64(cpuNs)/float64(b.N)/1e3, "cpu-µs/event")
			b.ReportMetric(float64(pgNs)/float64(b.N)/1e3, "pg-cpu-µs/event")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestSQLBackfill: the cost of a backfill of 10,000 users
// (SCIMGATE_BACKFILL_USERS) to a sql target on a real PostgreSQL, no rate
// limit, outbox concurrency 32 (SCIMGATE_SQL_CONCURRENCY), the default
// pool: each user.snapshot runs the upsert saving the id, one database
// transaction each. It reports the wall time (storing the snapshot, then
// delivering it), events/s and this process's CPU, and asserts that
// app_users then holds exactly one row per user and the id map an id for
// each. Gated by SCIMGATE_BENCH=1.
//
//	SCIMGATE_BENCH=1 go test ./outbox/rest -run TestSQLBackfill -v -timeout 10m
func TestSQLBackfill(t *testing.T) {
	if os.Getenv("SCIMGATE_BENCH") == "" {
		t.Skip("set SCIMGATE_BENCH=1 to run (about a minute)")
	}
	users := envInt(t, "SCIMGATE_BACKFILL_USERS", 10000)
	conc := envInt(t, "SCIMGATE_SQL_CONCURRENCY", 32)
	pg := sqltest.Postgres(t)
	pg.Exec(sqlPerfSchema)
	db := openCmdDB(t)
	usersBucket := []byte("bench_users")
	if err := db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket(usersBucket)
		if err != nil {
			return err
		}
		for i := range users {
			id, rec := benchUser(i)
			if err := b.Put([]byte(id), []byte(rec)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := outbox.DefaultConfig()
	cfg.Concurrency = conc
	tg := sqlTarget(t, sqlUpsert(pg.DSN, "user.snapshot", ""))
	tg.Events = []string{"user.*"}
	cfg.Targets = []outbox.Target{tg}
	cfg.Transports = map[string]outbox.Transport{outbox.TypeSQL: rest.SQLTransport()}
	d := newDispatcher(t, db, cfg)
	d.SetSnapshot(func(tx *bolt.Tx, emit func(outbox.Event) error) error {
		if err := emit(outbox.Event{Type: outbox.TypeSnapshotStarted, Data: json.RawMessage(fmt.Sprintf(`{"sequence":0,"users":%d,"groups":0}`, users))}); err != nil {
			return err
		}
		err := tx.Bucket(usersBucket).ForEach(func(k, v []byte) error {
			return emit(outbox.Event{Type: outbox.TypeUserSnapshot, Resources: []string{"User/" + string(k)}, Data: json.RawMessage(`{"user":` + string(v) + `}`)})
		})
		if err != nil {
			return err
		}
		return emit(outbox.Event{Type: outbox.TypeSnapshotCompleted, Data: json.RawMessage(`{"sequence":0}`)})
	})
	runDispatcher(t, d)

	settings, load0 := pgSettings(pg), loadAvg()
	pgCPU0 := pgCPU(pg)
	cpu0 := cpuTime()
	t0 := time.Now()
	bs, err := d.Backfill("app")
	if err != nil {
		t.Fatal(err)
	}
	t1 := time.Now()
	var done outbox.BackfillStatus
	for deadline := time.Now().Add(8 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		st := targetStatus(t, d)
		if st.DeadLetters != 0 {
			t.Fatalf("dead letters: %+v", st)
		}
		if st.Backfill != nil && st.Backfill.State == outbox.BackfillDone {
			done = *st.Backfill
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backfill not done: %+v", st)
		}
	}
	t2 := time.Now()
	cpuNs := cpuTime() - cpu0
	pgNs := pgCPU(pg) - pgCPU0

	t.Logf("backfill of %d users to a sql target (PostgreSQL: %s), one upsert saving the id per user, one transaction each, outbox concurrency %d, pool 4:", users, settings, conc)
	t.Logf("  snapshot stored in %v (%d events); delivered %v later; wall time %v", t1.Sub(t0).Round(time.Millisecond), bs.Total, t2.Sub(t1).Round(time.Millisecond), t2.Sub(t0).Round(time.Millisecond))
	t.Logf("  %.0f events/s over the whole backfill (%.0f over the delivery); CPU: this process %.2f s (%.0f µs per user), PostgreSQL's processes %.2f s (%.0f µs per user)",
		float64(users)/t2.Sub(t0).Seconds(), float64(users)/t2.Sub(t1).Seconds(), float64(cpuNs)/1e9, float64(cpuNs)/float64(users)/1e3,
		float64(pgNs)/1e9, float64(pgNs)/float64(users)/1e3)
	t.Logf("  PostgreSQL sessions opened on database app: %s", strings.Join(pg.Query("select sessions from pg_stat_database where datname = 'app'"), ""))
	t.Logf("  load average %s before, %s after (2 shared cores)", load0, loadAvg())
	if done.Total != users+2 {
		t.Errorf("backfill total %d, want %d", done.Total, users+2)
	}
	want := fmt.Sprintf("%d|%d", users, users)
	if got := pg.Query("select count(*), count(distinct login) from app_users"); len(got) != 1 || got[0] != want {
		t.Fatalf("app_users holds %q (rows|logins), want exactly %s", got, want)
	}
	for _, i := range []int{0, users / 2, users - 1} {
		id, _ := benchUser(i)
		checkIDMap(t, d, id)
	}
	if got := pg.Query("select count(*) from app_users where email <> lower(email) or disabled or first_name <> 'Ada'"); len(got) != 1 || got[0] != "0" {
		t.Errorf("rows not as mapped: %q", got)
	}
}
