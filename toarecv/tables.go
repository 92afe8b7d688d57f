//go:build linux

package toarecv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
)

// tables are the receiver's maps as user space uses them.
type tables struct {
	entries, settings, trusted, stats *ebpf.Map
	ncpu                              int
}

// reservedKind reports whether kind is no option at all: end of list or
// no-op. Every other kind is accepted, as toa.ko and the agent's
// configuration accept it (a kind Linux reads itself, such as timestamps,
// would read those as TOA: the operator's choice, not forbidden).
func reservedKind(kind uint8) bool {
	return kind <= 1
}

// check refuses what the receiver cannot honour.
func (c Config) check() error {
	if len(c.Trusted) > MaxPrefixes {
		return fmt.Errorf("toarecv: %d trusted prefixes, at most %d", len(c.Trusted), MaxPrefixes)
	}
	for _, p := range c.Trusted {
		if !p.IsValid() {
			return fmt.Errorf("toarecv: invalid trusted prefix %v", p)
		}
	}
	for _, k := range c.Kinds {
		if reservedKind(k) {
			return fmt.Errorf("toarecv: option kind %d is no option (0 ends the list, 1 is a no-op)", k)
		}
	}
	return nil
}

// prefixKey is a trusted prefix as the LPM trie holds it: IPv4 mapped.
func prefixKey(p netip.Prefix) recvToaPrefix {
	p = p.Masked()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	return recvToaPrefix{Prefixlen: uint32(bits), Addr: netip.AddrFrom16(p.Addr().As16()).As16()}
}

// keyPrefix is prefixKey's inverse.
func keyPrefix(k recvToaPrefix) netip.Prefix {
	a := netip.AddrFrom16(k.Addr)
	bits := int(k.Prefixlen)
	if a.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), bits-96)
	}
	return netip.PrefixFrom(a, bits)
}

// setConfig brings the maps to cfg without detaching anything. Prefixes
// that go are removed before new ones come, so no moment trusts a source
// neither list trusts; going to or from "trust every source" is ordered
// the same way.
func (t tables) setConfig(cfg Config) error {
	if err := cfg.check(); err != nil {
		return err
	}
	kinds := cfg.Kinds
	if len(kinds) == 0 {
		kinds = DefaultKinds
	}
	var settings recvToaConfig
	for _, k := range kinds {
		settings.Kinds[k>>6] |= 1 << (k & 63)
	}
	if len(cfg.Trusted) == 0 {
		settings.TrustAll = 1
	}
	have, err := t.trustedKeys()
	if err != nil {
		return err
	}
	want := make(map[recvToaPrefix]bool)
	for _, p := range cfg.Trusted {
		want[prefixKey(p)] = true
	}
	if settings.TrustAll == 1 {
		if err := t.putSettings(settings); err != nil {
			return err
		}
	}
	for _, k := range have {
		if !want[k] {
			if err := t.trusted.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				return fmt.Errorf("toarecv: removing trusted prefix %v: %w", keyPrefix(k), err)
			}
		}
	}
	for k := range want {
		if err := t.trusted.Put(k, uint8(1)); err != nil {
			return fmt.Errorf("toarecv: adding trusted prefix %v: %w", keyPrefix(k), err)
		}
	}
	return t.putSettings(settings)
}

func (t tables) putSettings(s recvToaConfig) error {
	if err := t.settings.Put(uint32(0), s); err != nil {
		return fmt.Errorf("toarecv: writing the settings: %w", err)
	}
	return nil
}

func (t tables) trustedKeys() ([]recvToaPrefix, error) {
	var (
		keys []recvToaPrefix
		k    recvToaPrefix
		v    uint8
	)
	it := t.trusted.Iterate()
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("toarecv: reading the trusted prefixes: %w", err)
	}
	return keys, nil
}

// config reads the configuration in force (kinds sorted, prefixes in the
// trie's order).
func (t tables) config() (Config, error) {
	var s recvToaConfig
	if err := t.settings.Lookup(uint32(0), &s); err != nil {
		return Config{}, fmt.Errorf("toarecv: reading the settings: %w", err)
	}
	var cfg Config
	for k := range 256 {
		if s.Kinds[k>>6]&(1<<(k&63)) != 0 {
			cfg.Kinds = append(cfg.Kinds, uint8(k))
		}
	}
	if s.TrustAll == 1 {
		return cfg, nil
	}
	keys, err := t.trustedKeys()
	if err != nil {
		return Config{}, err
	}
	for _, k := range keys {
		cfg.Trusted = append(cfg.Trusted, keyPrefix(k))
	}
	slices.SortFunc(cfg.Trusted, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return cfg, nil
}

// counters reads every counter per possible CPU.
func (t tables) counters() ([]Counter, error) {
	out := make([]Counter, len(CounterNames))
	for i, name := range CounterNames {
		vals := make([]uint64, t.ncpu)
		if err := t.stats.Lookup(uint32(i), &vals); err != nil {
			return nil, fmt.Errorf("toarecv: reading counter %s: %w", name, err)
		}
		out[i] = Counter{Name: name, PerCPU: vals}
	}
	return out, nil
}

// lookup returns the entry of the socket fd.
func (t tables) lookup(fd int) (Entry, bool, error) {
	var e recvToaEntry
	err := t.entries.Lookup(uint32(fd), &e)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Entry{}, false, nil
	}
	if err != nil {
		return Entry{}, false, fmt.Errorf("toarecv: looking up socket %d: %w", fd, err)
	}
	return Entry{
		Client: addrPort(e.Client, e.ClientFamily, e.ClientPort),
		Edge:   addrPort(e.Edge, e.EdgeFamily, e.EdgePort),
	}, true, nil
}

// addrPort decodes an address of the entry; port is big-endian in memory.
func addrPort(a [16]uint8, family uint8, port uint16) netip.AddrPort {
	p := ntohs(port)
	if family == 4 {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[:4])), p)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), p)
}

// ntohs turns a big-endian uint16 read in the host's order into its value.
func ntohs(v uint16) uint16 {
	b := [2]byte{}
	binary.NativeEndian.PutUint16(b[:], v)
	return uint16(b[0])<<8 | uint16(b[1])
}

// with runs fn on the receiver's maps, holding them open for its whole
// length (Close waits), or returns an error once the receiver is closed.
func (r *Receiver) with(fn func(tables) error) error {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.objs == nil {
		return errors.New("toarecv: receiver closed")
	}
	m := r.objs.recvMaps
	return fn(tables{entries: m.ToaEntries, settings: m.ToaSettings, trusted: m.ToaTrusted, stats: m.ToaStats, ncpu: r.ncpu})
}

// SetConfig changes the trusted prefixes and kinds in force, without
// detaching anything (SIGHUP). It holds the pin folder's lock, so
// writers in other processes take turns.
func (r *Receiver) SetConfig(cfg Config) error {
	return r.with(func(t tables) error { return withPinLock(r.pinDir, func() error { return t.setConfig(cfg) }) })
}

// Config returns the configuration in force.
func (r *Receiver) Config() (cfg Config, err error) {
	err = r.with(func(t tables) error { cfg, err = t.config(); return err })
	return cfg, err
}

// Counters returns the counters, per possible CPU, in CounterNames order.
func (r *Receiver) Counters() (cs []Counter, err error) {
	err = r.with(func(t tables) error { cs, err = t.counters(); return err })
	return cs, err
}

// Lookup returns the entry of the TCP socket fd, false when it has none.
func (r *Receiver) Lookup(fd int) (e Entry, found bool, err error) {
	err = r.with(func(t tables) error { e, found, err = t.lookup(fd); return err })
	return e, found, err
}
