package gateway

import (
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
)

// parsePrefix reads an address ("203.0.113.7", a single host) or a CIDR
// range ("203.0.113.0/24", "2001:db8::/32").
func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// prefixes parses a validated list (errors were reported by Validate).
func prefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := parsePrefix(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// allowed reports whether addr is in one of ps; an empty list allows all.
func allowed(ps []netip.Prefix, addr netip.Addr) bool {
	if len(ps) == 0 {
		return true
	}
	addr = addr.Unmap()
	return slices.ContainsFunc(ps, func(p netip.Prefix) bool { return p.Contains(addr) })
}

// clientAddress is the address a request comes from: the TCP peer, or —
// when the peer is a trusted proxy — the right-most untrusted hop of the
// one header the operator named (scim.forwarded_header: X-Forwarded-For by
// default, Forwarded (RFC 7239), or another list-of-addresses header such
// as X-Real-IP). Each proxy appends the address it received the request
// from, so only the part added by trusted proxies can be believed; every
// other header is ignored, because a proxy that appends to one passes a
// client's copy of the others through untouched (a client-written
// "Forwarded: for=10.0.0.5" behind an X-Forwarded-For proxy). A header
// from an untrusted peer is never read. The zero Addr means unknown.
func clientAddress(r *http.Request, trusted []netip.Prefix, header string) netip.Addr {
	peer := remoteAddr(r.RemoteAddr)
	if !peer.IsValid() || len(trusted) == 0 || !allowed(trusted, peer) {
		return peer
	}
	if header == "" {
		header = DefaultForwardedHeader
	}
	var hops []string
	if strings.EqualFold(header, "Forwarded") {
		hops = forwardedFor(r.Header.Values("Forwarded"))
	} else {
		for _, v := range r.Header.Values(header) {
			for _, h := range strings.Split(v, ",") {
				hops = append(hops, strings.TrimSpace(h))
			}
		}
	}
	addr := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a := hopAddr(hops[i])
		if !a.IsValid() {
			return addr // unparseable or obfuscated: stop at the last address we could trust
		}
		addr = a
		if !allowed(trusted, a) {
			return a
		}
	}
	return addr
}

// DefaultForwardedHeader is the header read behind a trusted proxy unless
// scim.forwarded_header names another.
const DefaultForwardedHeader = "X-Forwarded-For"

// forwardedFor returns the for= parameters of Forwarded headers, in order;
// nil when there are none. An element without for= counts as an
// unparseable hop (""), so that the walk stops there.
func forwardedFor(values []string) []string {
	var out []string
	for _, v := range values {
		for _, elem := range strings.Split(v, ",") {
			hop := ""
			for _, pair := range strings.Split(elem, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "for") {
					hop = strings.Trim(strings.TrimSpace(val), `"`)
				}
			}
			out = append(out, hop)
		}
	}
	return out
}

// hopAddr parses one hop: "203.0.113.7", "203.0.113.7:4711",
// "[2001:db8::1]:4711" or "2001:db8::1".
func hopAddr(h string) netip.Addr {
	if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return a.Unmap()
	}
	return remoteAddr(h)
}

func remoteAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}
