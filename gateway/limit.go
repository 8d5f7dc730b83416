package gateway

import (
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/time/rate"

	"github.com/scimgate/scimgate/gateway/scim"
)

// limiter is a token bucket per client. Okta retries a 429 after its
// Retry-After, so excess load is deferred, not lost.
type limiter struct {
	mu      sync.Mutex
	rate    rate.Limit
	burst   int
	clients map[string]*rate.Limiter
	swept   time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	if burst <= 0 {
		burst = int(math.Ceil(perSecond))
	}
	return &limiter{rate: rate.Limit(perSecond), burst: burst, clients: map[string]*rate.Limiter{}}
}

// reserve returns 0 when the request may proceed, else how long to wait.
func (l *limiter) reserve(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		// Forget idle clients so the map stays bounded.
		for k, lim := range l.clients {
			if lim.TokensAt(now) >= float64(l.burst) {
				delete(l.clients, k)
			}
		}
		l.swept = now
	}
	lim, ok := l.clients[key]
	if !ok {
		lim = rate.NewLimiter(l.rate, l.burst)
		l.clients[key] = lim
	}
	r := lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

func (s *Server) rateLimit(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		lim := s.limiter.Load()
		if lim == nil {
			return next(c)
		}
		key, _ := c.Get(ctxClientKey).(string)
		if key == "" { // not set by requireAuth: by address (never echo's RealIP, which believes any client's headers)
			key = s.auth.Load().client(c.Request()).String()
		}
		if wait := lim.reserve(key, time.Now()); wait > 0 {
			s.metrics.limited.Inc()
			secs := int(math.Ceil(wait.Seconds()))
			c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
			return scim.Errorf(http.StatusTooManyRequests, "", "rate limit of %g requests/s exceeded; retry after %d s", float64(lim.rate), secs)
		}
		return next(c)
	}
}

// wait returns how long key must wait before reserve lets it proceed, and
// takes nothing: for a limit on failures, checked before each attempt and
// charged (reserve) only when one fails.
func (l *limiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	lim, ok := l.clients[key]
	if !ok {
		return 0
	}
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(l.rate) * float64(time.Second))
}
