package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/scimgate/scimgate/outbox"
)

// restoreRig is the real binary, a signature-verifying receiver, and the
// CLI, on one data dir.
type restoreRig struct {
	t       *testing.T
	bin     string
	dataDir string
	env     []string
	rcv     *receiver
	g       *binaryGateway
}

func newRestoreRig(t *testing.T) *restoreRig {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	secret, _ := outbox.NewSecret()
	rcv, srv := newReceiver(t, secret)
	dir := t.TempDir()
	return &restoreRig{t: t, bin: buildBinary(t), dataDir: dir, rcv: rcv,
		env: append(os.Environ(), "SCIMGATE_DATA_DIR="+dir, "SCIMGATE_SCIM_TOKEN="+e2eToken, "SCIMGATE_ADMIN_TOKEN="+e2eToken,
			"SCIMGATE_WEBHOOK_URL="+srv.URL+"/hooks", "SCIMGATE_WEBHOOK_SECRET="+secret, "SCIMGATE_CONFIG=")}
}

func (r *restoreRig) start() {
	r.t.Helper()
	r.g = startBinary(r.t, r.bin, r.env, freePort(r.t), freePort(r.t))
}

// stop sends SIGTERM and waits: a clean stop.
func (r *restoreRig) stop() {
	r.t.Helper()
	r.g.cmd.Process.Signal(syscall.SIGTERM)
	if err := r.g.cmd.Wait(); err != nil {
		r.t.Fatalf("gateway exit: %v\n%s", err, r.g.out)
	}
}

// cli runs the binary's command line; it fails the test unless the exit
// code is want.
func (r *restoreRig) cli(want int, args ...string) string {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.bin, args...)
	cmd.Env = r.env
	if r.g != nil {
		cmd.Env = append(cmd.Env, "SCIMGATE_ADMIN_LISTEN="+strings.TrimPrefix(r.g.admin, "http://"))
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		r.t.Fatal(err)
	}
	if code != want {
		r.t.Fatalf("scimgate %v: exit %d, want %d\n%s", args, code, want, out)
	}
	return string(out)
}

// patchTitle changes the user's title, a real change with one event.
func (r *restoreRig) patchTitle(id, title string) {
	r.t.Helper()
	status, body, err := tryDo(r.g.scim, "PATCH", "/Users/"+id, fmt.Sprintf(`{"Operations":[{"op":"replace","path":"title","value":%q}]}`, title))
	if err != nil || status/100 != 2 {
		r.t.Fatalf("PATCH title %s: %d %v %v", title, status, body, err)
	}
}

// numbers returns the highest sequence and user version received, and
// the event whose user has the given title (nil if none).
func (r *restoreRig) numbers(title string) (maxSeq, maxVersion float64, withTitle map[string]any) {
	r.rcv.mu.Lock()
	defer r.rcv.mu.Unlock()
	for _, ev := range r.rcv.events {
		u := userOf(ev)
		if u["title"] == title {
			withTitle = ev
			continue
		}
		maxSeq = max(maxSeq, ev["sequence"].(float64))
		maxVersion = max(maxVersion, u["version"].(float64))
	}
	return
}

func userOf(ev map[string]any) map[string]any {
	d, _ := ev["data"].(map[string]any)
	u, _ := d["user"].(map[string]any)
	return u
}

// eventWithTitle waits for the event that carries the title.
func (r *restoreRig) eventWithTitle(title string) {
	r.t.Helper()
	r.rcv.waitFor(r.t, "the event with title "+title, 15*time.Second, func(evs []map[string]any) bool {
		for _, ev := range evs {
			if userOf(ev)["title"] == title {
				return true
			}
		}
		return false
	})
}

// checkAbove asserts that the third change's event numbers exceed every
// one received before it.
func (r *restoreRig) checkAbove(title string) {
	r.t.Helper()
	r.eventWithTitle(title)
	maxSeq, maxVersion, third := r.numbers(title)
	seq, ver := third["sequence"].(float64), userOf(third)["version"].(float64)
	if seq <= maxSeq || ver <= maxVersion {
		r.t.Errorf("after the restore: sequence %.0f, version %.0f; before it up to sequence %.0f, version %.0f — want both greater",
			seq, ver, maxSeq, maxVersion)
	}
	r.t.Logf("before the restore: up to sequence %.0f, version %.0f; the change after it: sequence %.0f, version %.0f", maxSeq, maxVersion, seq, ver)
}

// Numbering across a restore (docs/events.md, "After a restore"): take a
// backup of a running gateway, make two changes, stop it, `scimgate restore`
// the backup, start again, make a third change: its event's sequence and the
// user's version, read at a real webhook receiver, exceed every one issued
// before.
func TestRestoreKeepsNumbersGrowing(t *testing.T) {
	r := newRestoreRig(t)
	r.start()
	status, user, err := tryDo(r.g.scim, "POST", "/Users", `{"userName":"ada@example.com","title":"Engineer"}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %v %v", status, user, err)
	}
	id := user["id"].(string)
	r.eventWithTitle("Engineer")
	backup := filepath.Join(t.TempDir(), "scimgate-backup.db")
	if out := r.cli(0, "backup", backup); !strings.Contains(out, "scimgate restore "+backup) {
		t.Errorf("backup's closing hint does not name restore:\n%s", out)
	}
	r.patchTitle(id, "Lead")
	r.patchTitle(id, "CTO")
	r.eventWithTitle("CTO")
	// Offline only: refused while the gateway has the database open.
	if out := r.cli(1, "restore", backup); !strings.Contains(out, "is open in another process: stop scimgate before restoring") {
		t.Errorf("restore while running:\n%s", out)
	}
	r.stop()
	out := r.cli(0, "restore", backup)
	for _, want := range []string{backup + ": consistent", "kept the current database as " + filepath.Join(r.dataDir, dbFile+".pre-restore-"), "restored " + backup} {
		if !strings.Contains(out, want) {
			t.Errorf("restore output lacks %q:\n%s", want, out)
		}
	}
	kept, _ := filepath.Glob(filepath.Join(r.dataDir, dbFile+".pre-restore-*"))
	if len(kept) != 1 {
		t.Errorf("pre-restore copies: %v", kept)
	} else if _, err := checkDatabase(kept[0]); err != nil {
		t.Errorf("the kept database: %v", err)
	}
	r.start()
	defer r.stop()
	// The backup's state is back: the title is the one before the changes.
	if status, got, _ := tryDo(r.g.scim, "GET", "/Users/"+id, ""); status != 200 || got["title"] != "Engineer" {
		t.Fatalf("after restore: %d %v", status, got)
	}
	if !strings.Contains(r.g.out.String(), "raised the restore epoch") {
		t.Errorf("the start after restore does not log the epoch:\n%s", r.g.out)
	}
	r.patchTitle(id, "Chair")
	r.checkAbove("Chair")
}

// A backup copied into place by hand is detected too, even after a crash
// (no clean stop): the online backup changed the boot id, so the copy
// carries a pair the epoch file no longer holds.
func TestManualRestoreDetected(t *testing.T) {
	r := newRestoreRig(t)
	r.start()
	status, user, err := tryDo(r.g.scim, "POST", "/Users", `{"userName":"grace@example.com","title":"Engineer"}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %v %v", status, user, err)
	}
	id := user["id"].(string)
	r.eventWithTitle("Engineer")
	backup := filepath.Join(t.TempDir(), "b.db")
	r.cli(0, "backup", backup)
	r.patchTitle(id, "Lead")
	r.patchTitle(id, "CTO")
	r.eventWithTitle("CTO")
	r.g.kill() // SIGKILL: no shutdown code runs
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dataDir, dbFile), b, 0o600); err != nil { // cp backup data/scimgate.db
		t.Fatal(err)
	}
	r.start()
	defer r.stop()
	if !strings.Contains(r.g.out.String(), "raised the restore epoch") {
		t.Errorf("a manual restore was not detected:\n%s", r.g.out)
	}
	r.patchTitle(id, "Chair")
	r.checkAbove("Chair")
}

// Restarts without a restore keep the epoch: numbering as in release 1.
func TestRestartKeepsEpoch(t *testing.T) {
	r := newRestoreRig(t)
	r.start()
	status, user, err := tryDo(r.g.scim, "POST", "/Users", `{"userName":"alan@example.com","title":"Engineer"}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %v %v", status, user, err)
	}
	r.eventWithTitle("Engineer")
	r.stop()
	r.start()
	r.patchTitle(user["id"].(string), "Lead")
	r.eventWithTitle("Lead")
	r.g.kill()
	r.start()
	defer r.stop()
	r.patchTitle(user["id"].(string), "CTO")
	r.eventWithTitle("CTO")
	if strings.Contains(r.g.out.String(), "raised the restore epoch") {
		t.Errorf("a restart raised the epoch:\n%s", r.g.out)
	}
	r.rcv.mu.Lock()
	defer r.rcv.mu.Unlock()
	seqs := map[string]float64{} // by event id: delivery is at least once
	for _, ev := range r.rcv.events {
		seqs[ev["id"].(string)] = ev["sequence"].(float64)
	}
	var sum float64
	for _, s := range seqs {
		sum += s
	}
	if len(seqs) != 3 || sum != 1+2+3 {
		t.Errorf("sequences %v: want 1, 2 and 3 (epoch 0, numbering as in release 1)", seqs)
	}
	e, err := readEpochFile(r.dataDir)
	if err != nil || e.Epoch != 0 || e.Boot == "" {
		t.Errorf("epoch file: %+v %v", e, err)
	}
}

// restore refuses a backup that is not one, and changes nothing.
func TestRestoreRefusesBadFiles(t *testing.T) {
	dataDir := t.TempDir()
	src := goodDatabase(t)
	b, _ := os.ReadFile(src)
	if err := os.WriteFile(filepath.Join(dataDir, dbFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "truncated.db")
	os.WriteFile(truncated, b[:len(b)/40], 0o600)
	empty := filepath.Join(t.TempDir(), "empty.db")
	os.WriteFile(empty, nil, 0o600)
	text := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(text, []byte(strings.Repeat("not a database\n", 1000)), 0o600)
	for file, want := range map[string]string{
		truncated:                            "the file is truncated",
		empty:                                "is empty: not a backup",
		text:                                 "not a bbolt database",
		filepath.Join(dataDir, "missing.db"): "no such file",
		filepath.Join(dataDir, dbFile):       "is the database itself",
	} {
		var out strings.Builder
		err := restoreDatabase(file, dataDir, time.Now(), &out)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("restore %s: %v, want %q", filepath.Base(file), err, want)
		}
		entries, _ := os.ReadDir(dataDir)
		if len(entries) != 1 {
			t.Errorf("restore %s left files in the data dir: %v", filepath.Base(file), entries)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(dataDir, dbFile)); string(after) != string(b) {
		t.Error("a refused restore changed the database")
	}
}

// restore works when the current database is the damaged one (the usual
// reason to restore): it is kept, not opened.
func TestRestoreOverDamagedDatabase(t *testing.T) {
	dataDir := t.TempDir()
	good, _ := os.ReadFile(goodDatabase(t))
	if err := os.WriteFile(filepath.Join(dataDir, dbFile), good[:len(good)/50], 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := restoreDatabase(goodDatabase(t), dataDir, time.Date(2026, 11, 23, 9, 10, 2, 0, time.UTC), &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	kept := filepath.Join(dataDir, dbFile+".pre-restore-20261123T091002Z")
	if b, err := os.ReadFile(kept); err != nil || len(b) != len(good)/50 {
		t.Errorf("kept database: %d bytes, %v", len(b), err)
	}
	if _, err := checkDatabase(filepath.Join(dataDir, dbFile)); err != nil {
		t.Errorf("restored database: %v", err)
	}
	e, err := readEpochFile(dataDir)
	if err != nil || !strings.HasPrefix(e.Boot, "restore-") {
		t.Errorf("epoch file after restore: %+v %v", e, err)
	}
}

// when the second of the boot id's two writes fails (here
// data/epoch cannot be replaced at shutdown; a full disk or a kill -9
// between the writes does the same), the next start must not take the data
// dir for a restored one: no raised epoch, numbering goes on.
func TestFailedEpochWriteIsNotARestore(t *testing.T) {
	r := newRestoreRig(t)
	r.start()
	status, user, err := tryDo(r.g.scim, "POST", "/Users", `{"userName":"edsger@example.com","title":"Engineer"}`)
	if err != nil || status != 201 {
		t.Fatalf("create: %d %v %v", status, user, err)
	}
	r.eventWithTitle("Engineer")
	// data/epoch cannot be replaced: a directory in its place.
	epoch := filepath.Join(r.dataDir, epochFile)
	saved, err := os.ReadFile(epoch)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(epoch)
	os.MkdirAll(filepath.Join(epoch, "blocker"), 0o700)
	r.g.cmd.Process.Signal(syscall.SIGTERM)
	r.g.cmd.Wait() // the shutdown reports the failed write
	// The write failed: the file holds what it held.
	os.RemoveAll(epoch)
	os.WriteFile(epoch, saved, 0o600)
	r.start()
	defer r.stop()
	if strings.Contains(r.g.out.String(), "raised the restore epoch") {
		t.Errorf("a failed write of data/epoch was taken for a restore:\n%s", r.g.out)
	}
	r.patchTitle(user["id"].(string), "Lead")
	r.eventWithTitle("Lead")
	_, _, lead := r.numbers("Lead")
	if seq := lead["sequence"].(float64); seq != 2 {
		t.Errorf("the next event's sequence is %.0f, want 2 (epoch 0, not raised)", seq)
	}
}

// every restore's gap is kept. A database restored twice
// (the second time from a backup taken after the first restore) still
// answers 410 to a cursor from the database the first restore discarded.
func TestEveryRestoreGapKept(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), dbFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	setTail := func(seq uint64) {
		t.Helper()
		if err := db.Update(func(tx *bolt.Tx) error {
			if err := outbox.InitBuckets(tx); err != nil {
				return err
			}
			return tx.Bucket([]byte("outbox_events")).SetSequence(seq)
		}); err != nil {
			t.Fatal(err)
		}
	}
	raise := func(floor uint64) {
		t.Helper()
		if err := db.Update(func(tx *bolt.Tx) error { _, err := outbox.RaiseSequence(tx, floor); return err }); err != nil {
			t.Fatal(err)
		}
	}
	// The backup was taken at 10; the discarded database went on to 40.
	setTail(10)
	raise(1 << epochShift)
	// A second backup at floor+5, restored after the database reached floor+30.
	setTail(1<<epochShift + 5)
	raise(2 << epochShift)
	feed := outbox.NewFeed(db, outbox.FeedConfig{})
	for _, cursor := range []uint64{40, 1<<epochShift + 30} {
		if _, err := feed.Read(context.Background(), outbox.FeedQuery{After: cursor}); !errors.Is(err, outbox.ErrCursorGone) {
			t.Errorf("cursor %d from a discarded database: %v, want ErrCursorGone", cursor, err)
		}
	}
	if _, err := feed.Read(context.Background(), outbox.FeedQuery{After: 5}); err != nil {
		t.Errorf("cursor 5, before both gaps: %v", err)
	}
}
