package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/scimgate/scimgate/outbox"
)

// Issue 13: a database that became mostly free shrinks at the next start,
// and a clean stop leaves the freelist written so that the start does not
// read every page.
func TestStartUpCompaction(t *testing.T) {
	secret, _ := outbox.NewSecret()
	dir := t.TempDir()
	cfg := DefaultConfig(testEnv(dir, "http://127.0.0.1:9/hooks", secret))
	cfg.Outbox.Targets = nil // no events kept for a target: deleting users frees their pages
	a := startAppCfg(t, cfg, appOptions{})
	base := "http://" + a.SCIMAddr() + "/scim/v2"
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ids []string
	for w := range 8 {
		wg.Go(func() {
			for i := range 250 {
				status, body, err := tryDo(base, "POST", "/Users", fmt.Sprintf(`{"userName":"u%d-%d@example.com","title":"%0500d"}`, w, i, i))
				if err != nil || status != 201 {
					t.Errorf("create: %d %v", status, err)
					return
				}
				mu.Lock()
				ids = append(ids, body["id"].(string))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(ids); i += 8 {
				tryDo(base, "DELETE", "/Users/"+ids[i], "")
			}
		})
	}
	wg.Wait()
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, dbFile)
	before, _ := os.Stat(path)
	b := startAppCfg(t, cfg, appOptions{})
	defer b.Close(context.Background())
	after, _ := os.Stat(path)
	if after.Size() >= before.Size()/2 {
		t.Errorf("file %d bytes before the start, %d after: not compacted", before.Size(), after.Size())
	}
	// The compacted file is the same gateway: it keeps serving.
	if status, body, err := tryDo("http://"+b.SCIMAddr()+"/scim/v2", "GET", "/Users", ""); err != nil || status != 200 || body["totalResults"] != float64(0) {
		t.Errorf("after compaction: %d %v %v", status, body, err)
	}
	t.Logf("start-up compaction: %d → %d bytes", before.Size(), after.Size())
}
