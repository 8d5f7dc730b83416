package gateway

import (
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/scimgate/scimgate/gateway/console"
)

// recentSize is how many SCIM requests the console's Recent activity shows.
const recentSize = 100

// recentRing keeps the last SCIM requests: method, route, status, duration,
// resource id and the version the request left it at; never a body, a
// query or a header's value other than those two.
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

// recentEntry is the ring's record of a request that was answered: the
// resource id is the route's, or a create's (from its Location); the
// version is the resource's after a write (from its ETag), so that the
// console can tell which request made which event.
func recentEntry(c echo.Context, start time.Time, method, route string, status int) console.Request {
	q := console.Request{At: start.UTC(), Method: method, Path: route, Status: status, Duration: time.Since(start), ResourceID: c.Param("id")}
	h := c.Response().Header()
	if q.ResourceID == "" && status == http.StatusCreated {
		if loc := h.Get(echo.HeaderLocation); loc != "" {
			q.ResourceID = path.Base(loc)
		}
	}
	if method != http.MethodGet && status < 300 {
		if tag := h.Get("ETag"); tag != "" {
			v := strings.Trim(strings.TrimPrefix(tag, "W/"), `"`)
			q.Version, _ = strconv.ParseUint(v, 10, 64)
		}
	}
	return q
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
