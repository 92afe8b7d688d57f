//go:build linux

package toarecv

// SetConfig changes the trusted prefixes and kinds of the pinned receiver
// without detaching anything: what a running realip-agent does on SIGHUP,
// holding nothing of the receiver but its pins between reloads (so that
// `realip-agent unload` detaches it at once). Like Receiver.SetConfig it
// refuses what the receiver cannot honour and removes prefixes that go
// before adding new ones.
func (p *Pinned) SetConfig(cfg Config) error {
	return withPinLock(p.dir, func() error { return p.t.setConfig(cfg) })
}
