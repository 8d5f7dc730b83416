package gateway

import (
	"sync"

	"github.com/scimgate/scimgate/gateway/console"
)

// recentSize is how many SCIM requests the console's Recent activity shows.
const recentSize = 100

// recentRing keeps the last SCIM requests: method, route, status, duration
// and resource id; never a body, a query or a header.
type recentRing struct {
	mu   sync.Mutex
	buf  [recentSize]console.Request
	next int
	n    int
}

func (r *recentRing) add(q console.Request) {
	r.mu.Lock()
	r.buf[r.next] = q
	r.next = (r.next + 1) % recentSize
	r.n = min(r.n+1, recentSize)
	r.mu.Unlock()
}

// RecentRequests returns the last SCIM requests, newest first.
func (s *Server) RecentRequests() []console.Request {
	r := &s.recent
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]console.Request, 0, r.n)
	for i := 1; i <= r.n; i++ {
		out = append(out, r.buf[(r.next-i+recentSize)%recentSize])
	}
	return out
}
