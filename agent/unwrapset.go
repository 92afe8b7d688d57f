//go:build linux

package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"

	"github.com/realip/realip/agent/unwrap"
	"github.com/realip/realip/internal/tproute"
)

// unwrapSet runs the configuration's unwrap relays and the routing their
// transparent sockets need. The routing is installed with the first relay
// and removed with the last one (and by stop).
type unwrapSet struct {
	log *slog.Logger

	mu      sync.Mutex
	relays  map[string]*namedRelay // by relayKey
	routes  *tproute.Routes
	routing tproute.Config // of routes
}

// namedRelay is a running relay and the name its metrics carry.
type namedRelay struct {
	name  string
	entry unwrap.Entry // as configured (before defaults)
	relay *unwrap.Relay
}

// relayKey identifies an entry's listening socket.
func relayKey(e unwrap.Entry) string { return e.Network + " " + e.Listen.String() }

// apply makes the running relays those of entries: unchanged entries keep
// their relay (and its live connections and flows), changed ones are
// restarted, new ones started and removed ones closed. New listening
// sockets are opened before anything is closed; if one cannot be, nothing
// changes.
func (s *unwrapSet) apply(entries []UnwrapEntry, routing UnwrapRouting) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := routing.tprouteConfig(); s.routes != nil && !reflect.DeepEqual(c, s.routing) {
		for k, r := range s.relays { // their sockets carry the old mark
			s.closeRelay(r, "unwrap_routing changed")
			delete(s.relays, k)
		}
	}
	if len(entries) > 0 {
		if err := s.ensureRouting(routing.tprouteConfig()); err != nil {
			return err
		}
	}
	want := make(map[string]UnwrapEntry, len(entries))
	var fresh []UnwrapEntry
	for _, e := range entries {
		k := relayKey(e.Entry)
		want[k] = e
		if _, ok := s.relays[k]; !ok {
			fresh = append(fresh, e)
		}
	}
	started, err := s.startAll(fresh)
	if err != nil {
		return err
	}
	if s.relays == nil {
		s.relays = make(map[string]*namedRelay)
	}
	var errs []error
	for k, r := range s.relays {
		e, ok := want[k]
		switch {
		case !ok:
			s.closeRelay(r, "removed from the configuration")
			delete(s.relays, k)
		case !reflect.DeepEqual(e.Entry, r.entry):
			errs = append(errs, s.restart(k, r, e))
		default:
			r.name = e.Name
		}
	}
	for _, r := range started {
		s.relays[relayKey(r.entry)] = r
	}
	if len(s.relays) == 0 {
		errs = append(errs, s.removeRouting())
	}
	return errors.Join(errs...)
}

// startAll starts a relay for each entry, or none: on an error it closes
// those it started.
func (s *unwrapSet) startAll(entries []UnwrapEntry) ([]*namedRelay, error) {
	var out []*namedRelay
	for _, e := range entries {
		r, err := s.start(e)
		if err != nil {
			for _, o := range out {
				o.relay.Close()
			}
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (s *unwrapSet) start(e UnwrapEntry) (*namedRelay, error) {
	r, err := unwrap.Start(e.Entry, unwrap.Options{Mark: s.routing.Mark, Logger: s.log.With("unwrap", e.Name)})
	if err != nil {
		return nil, fmt.Errorf("unwrap %s: %w", e.Name, err)
	}
	s.log.Info("unwrapping", "name", e.Name, "network", e.Entry.Network, "listen", e.Entry.Listen,
		"accept", fmt.Sprint(e.Entry.Accept), "to", e.Entry.To, "to6", e.Entry.To6)
	return &namedRelay{name: e.Name, entry: e.Entry, relay: r}, nil
}

// restart replaces the relay r at key k by one for e (its settings
// changed); if e's relay cannot start, r's settings are started again.
func (s *unwrapSet) restart(k string, r *namedRelay, e UnwrapEntry) error {
	s.closeRelay(r, "its settings changed")
	nr, err := s.start(e)
	if err == nil {
		s.relays[k] = nr
		return nil
	}
	old, oerr := s.start(UnwrapEntry{Name: r.name, Entry: r.entry})
	if oerr != nil {
		delete(s.relays, k)
		return errors.Join(err, fmt.Errorf("restarting the previous settings: %w", oerr))
	}
	s.relays[k] = old
	return err
}

func (s *unwrapSet) closeRelay(r *namedRelay, why string) {
	if err := r.relay.Close(); err != nil {
		s.log.Warn("closing an unwrap relay", "name", r.name, "err", err)
	}
	s.log.Info("unwrap relay closed", "name", r.name, "why", why)
}

// ensureRouting installs the routing for c, or moves it there from the
// one in force.
func (s *unwrapSet) ensureRouting(c tproute.Config) error {
	if s.routes != nil && reflect.DeepEqual(c, s.routing) {
		return nil
	}
	if err := s.removeRouting(); err != nil {
		return err
	}
	r, err := tproute.Install(c)
	if err != nil {
		return fmt.Errorf("unwrap routing: %w", err)
	}
	s.routes, s.routing = r, c
	s.log.Info("unwrap routing installed", "table", c.Table, "priority", c.Priority, "mark", fmt.Sprintf("%#x", c.Mark))
	return nil
}

func (s *unwrapSet) removeRouting() error {
	if s.routes == nil {
		return nil
	}
	if err := s.routes.Remove(); err != nil {
		return fmt.Errorf("unwrap routing: %w", err)
	}
	s.routes = nil
	s.log.Info("unwrap routing removed")
	return nil
}

// stop closes every relay and removes the routing.
func (s *unwrapSet) stop() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, r := range s.relays {
		s.closeRelay(r, "the agent is stopping")
		delete(s.relays, k)
	}
	return s.removeRouting()
}

// relayStats is one relay's counters, for metrics and status.
type relayStats struct {
	Name  string
	Entry unwrap.Entry
	Stats unwrap.Stats
}

// snapshot returns every relay's counters.
func (s *unwrapSet) snapshot() ([]relayStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]relayStats, 0, len(s.relays))
	for _, r := range s.relays {
		out = append(out, relayStats{Name: r.name, Entry: r.relay.Entry(), Stats: r.relay.Stats()})
	}
	var err error
	if s.routes != nil {
		err = s.routes.Check()
	}
	return out, err
}
