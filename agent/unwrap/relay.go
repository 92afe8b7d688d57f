//go:build linux

package unwrap

import (
	"fmt"
)

// Relay serves one Entry until Close.
type Relay struct {
	entry Entry
	impl  relayImpl
}

// relayImpl is the TCP or UDP engine behind a Relay.
type relayImpl interface {
	stats() Stats
	// close stops listening, closes every connection or flow and waits
	// for the engine's goroutines to return.
	close() error
}

// Start listens on e.Listen and relays to e.To / e.To6 until Close. The
// entry must be valid (see Entry.Validate).
func Start(e Entry, opt Options) (*Relay, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	e = e.withDefaults()
	var (
		impl relayImpl
		err  error
	)
	switch e.Network {
	case "tcp":
		impl, err = startTCP(e, opt)
	case "udp":
		impl, err = startUDP(e, opt)
	}
	if err != nil {
		return nil, fmt.Errorf("unwrap: %s %s: %w", e.Network, e.Listen, err)
	}
	return &Relay{entry: e, impl: impl}, nil
}

// Entry is the entry the relay serves, with defaults filled in.
func (r *Relay) Entry() Entry { return r.entry }

// Stats are the relay's counters since Start.
func (r *Relay) Stats() Stats { return r.impl.stats() }

// Close stops the relay: the listening socket, every live connection and
// flow; it returns when the relay's goroutines have.
func (r *Relay) Close() error { return r.impl.close() }
