//go:build linux

package origin

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/realip/realip/edge/rules"
)

// resolveLoop re-resolves the domain names every ResolveEvery.
func (p *Pool) resolveLoop(ctx context.Context) {
	t := time.NewTicker(p.opt.ResolveEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.resolveAll(ctx)
		}
	}
}

type answer struct {
	addrs []netip.Addr
	err   error
}

// resolveAll looks up every domain host at once and applies the answers:
// a good answer replaces the host's addresses, a failed one keeps them.
func (p *Pool) resolveAll(ctx context.Context) {
	answers := make([]answer, len(p.hosts))
	var wg sync.WaitGroup
	for i, h := range p.hosts {
		if h.origin.Kind != rules.OriginDomain {
			continue
		}
		wg.Go(func() {
			answers[i] = p.lookup(ctx, h.origin.Name)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // closing: the answers are cut short, not wrong
	}

	type change struct {
		host           string
		added, removed []netip.Addr
		err            error
		kept           int
	}
	var changes []change
	p.mu.Lock()
	rebuild := false
	for i, h := range p.hosts {
		if h.origin.Kind != rules.OriginDomain {
			continue
		}
		ans := answers[i]
		if ans.err != nil {
			h.lastErr = "resolve: " + ans.err.Error()
			changes = append(changes, change{host: h.label, err: ans.err, kept: len(h.addrs)})
			continue
		}
		h.lastErr = ""
		if slices.Equal(h.addrs, ans.addrs) {
			continue
		}
		changes = append(changes, change{
			host:    h.label,
			added:   minus(ans.addrs, h.addrs),
			removed: minus(h.addrs, ans.addrs),
		})
		h.addrs = ans.addrs
		rebuild = true
	}
	if rebuild {
		p.rebuildLocked()
	}
	p.mu.Unlock()

	for _, c := range changes {
		if c.err != nil {
			p.log.Warn("origin resolve failed", "host", c.host, "error", c.err, "kept", c.kept)
		} else {
			p.log.Info("origin addresses changed", "host", c.host, "added", c.added, "removed", c.removed)
		}
	}
}

// lookup resolves name to its sorted, distinct, usable addresses. An
// answer without any is an error, so that the last good one is kept.
func (p *Pool) lookup(ctx context.Context, name string) answer {
	ctx, cancel := context.WithTimeout(ctx, p.opt.ResolveTimeout)
	defer cancel()
	raw, err := p.opt.Resolver.LookupNetIP(ctx, "ip", name)
	if err != nil {
		return answer{err: err}
	}
	addrs := make([]netip.Addr, 0, len(raw))
	for _, a := range raw {
		a = clean(a)
		if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) == 0 {
		return answer{err: errNoAddrs}
	}
	return answer{addrs: addrs}
}

// minus returns the addresses of a that are not in b (both sorted).
func minus(a, b []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, x := range a {
		if _, found := slices.BinarySearchFunc(b, x, netip.Addr.Compare); !found {
			out = append(out, x)
		}
	}
	return out
}
