//go:build linux

package origin

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/realip/realip/internal/sockopt"
)

// healthLoop runs the active checks, the first at once, then every
// CheckEvery (a round that outlasts the period delays the next). Without
// an active check it lifts expired passive down marks instead.
func (p *Pool) healthLoop(ctx context.Context) {
	t := time.NewTicker(p.opt.CheckEvery)
	defer t.Stop()
	for {
		if p.check.TCPPort != 0 {
			p.checkRound(ctx)
		} else {
			p.expireDown(time.Now())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkRound checks every address at once, each result applied as it
// comes.
func (p *Pool) checkRound(ctx context.Context) {
	p.mu.Lock()
	targets := make([]*addrState, 0, len(p.addrs))
	for _, st := range p.addrs {
		targets = append(targets, st)
	}
	p.mu.Unlock()

	var wg sync.WaitGroup
	for _, st := range targets {
		wg.Go(func() {
			err := p.probe(ctx, st.addr)
			if ctx.Err() != nil {
				return // closing: not the origin's fault
			}
			p.applyCheck(st, err, time.Now())
		})
	}
	wg.Wait()
}

// probe opens a TCP connection to a on the check port, writes the check's
// Hello, if any, and closes it.
func (p *Pool) probe(ctx context.Context, a netip.Addr) error {
	d := net.Dialer{Timeout: p.opt.CheckTimeout, Control: sockopt.ReuseAddr}
	c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(a, p.check.TCPPort).String())
	if err != nil {
		return err
	}
	if len(p.check.Hello) > 0 {
		if err := c.SetWriteDeadline(time.Now().Add(p.opt.CheckTimeout)); err != nil {
			c.Close()
			return err
		}
		if _, err := c.Write(p.check.Hello); err != nil {
			c.Close()
			return fmt.Errorf("check hello: %w", err)
		}
	}
	return c.Close()
}

// applyCheck counts the result of an active check of st, with hysteresis:
// DownAfter failures in a row mark it down, UpAfter successes up.
func (p *Pool) applyCheck(st *addrState, err error, now time.Time) {
	p.mu.Lock()
	if p.addrs[st.addr] != st {
		p.mu.Unlock()
		return // dropped from DNS meanwhile
	}
	st.lastCheck = now
	var down, up bool
	if err != nil {
		st.okRun = 0
		st.failRun++
		st.lastErr = err.Error()
		if st.healthy && st.failRun >= p.opt.DownAfter {
			st.healthy = false
			down = true
		}
	} else {
		st.failRun = 0
		st.okRun++
		if !st.healthy && st.okRun >= p.opt.UpAfter {
			st.setUp()
			up = true
		}
	}
	if down || up {
		p.publishLocked()
	}
	hosts, msg := st.hosts, st.lastErr
	p.mu.Unlock()
	switch {
	case down:
		p.log.Info("origin down", "host", hosts, "addr", st.addr, "error", msg, "by", "check")
	case up:
		p.log.Info("origin up", "host", hosts, "addr", st.addr, "by", "check")
	}
}

// expireDown makes the addresses healthy again whose last passive failure
// is RetryAfter old (pools without an active check).
func (p *Pool) expireDown(now time.Time) {
	var back []*addrState
	p.mu.Lock()
	for _, st := range p.addrs {
		if !st.healthy && now.Sub(st.downAt) >= p.opt.RetryAfter {
			st.setUp()
			back = append(back, st)
		}
	}
	if len(back) > 0 {
		p.publishLocked()
	}
	hosts := make([]string, len(back))
	for i, st := range back {
		hosts[i] = st.hosts
	}
	p.mu.Unlock()
	for i, st := range back {
		p.log.Info("origin up", "host", hosts[i], "addr", st.addr, "by", "retry")
	}
}
