package toactl

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Mirrors of kmod/toa_uapi.h.
const (
	FamilyName    = "realip_toa"
	familyVersion = 1
	addrLen       = 18

	cmdGetConfig  = 1
	cmdSetConfig  = 2
	cmdGetStats   = 3
	cmdGetEntries = 4
	cmdGetEntry   = 5

	attrVersion   = 2
	attrTrusted   = 3
	attrKinds     = 4
	attrStats     = 5
	attrStat      = 6
	attrStatName  = 7
	attrStatValue = 8
	attrLive      = 9
	attrLocal     = 10
	attrProxy     = 11
	attrClient    = 12
)

// ErrNotLoaded means the kernel has no "realip_toa" family: toa.ko is not
// loaded (or is another vendor's module, which has no control interface).
var ErrNotLoaded = errors.New("toactl: the realip toa.ko module is not loaded (no generic netlink family " + FamilyName + ")")

// ErrNoEntry is returned by Lookup for a connection the module holds no
// entry for (it carried no trusted TOA option).
var ErrNoEntry = errors.New("toactl: no TOA entry for this connection")

// Config is the module's configuration.
type Config struct {
	Version string         // module version (read only)
	Trusted []netip.Prefix // empty: every source is trusted (legacy, unsafe)
	Kinds   []uint8        // accepted option kinds
}

// Stat is one counter, summed over CPUs.
type Stat struct {
	Name  string
	Value uint64
}

// Entry is one live connection that carried TOA. Addresses are unmapped.
type Entry struct {
	Local, Proxy, Client netip.AddrPort
}

// Client is a connection to the module's netlink family.
type Client struct {
	c      *genetlink.Conn
	family genetlink.Family
}

// Dial opens a netlink connection and finds the family.
func Dial() (*Client, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("toactl: netlink: %w", err)
	}
	f, err := c.GetFamily(FamilyName)
	if err != nil {
		c.Close()
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNotLoaded
		}
		return nil, fmt.Errorf("toactl: family %s: %w", FamilyName, err)
	}
	return &Client{c: c, family: f}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

func (c *Client) execute(cmd uint8, flags netlink.HeaderFlags, attrs []byte) ([]genetlink.Message, error) {
	msg := genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: familyVersion},
		Data:   attrs,
	}
	msgs, err := c.c.Execute(msg, c.family.ID, netlink.Request|flags)
	if err != nil {
		return nil, fmt.Errorf("toactl: command %d: %w", cmd, err)
	}
	return msgs, nil
}

// Config reads the configuration in force.
func (c *Client) Config() (Config, error) {
	msgs, err := c.execute(cmdGetConfig, 0, nil)
	if err != nil {
		return Config{}, err
	}
	if len(msgs) != 1 {
		return Config{}, fmt.Errorf("toactl: %d replies to GET_CONFIG", len(msgs))
	}
	return decodeConfig(msgs[0].Data)
}

// SetConfig replaces the trusted prefixes and the kinds (nil Kinds keeps the
// kinds in force). Trusted may be empty: every source is then trusted.
func (c *Client) SetConfig(cfg Config) error {
	attrs, err := encodeConfig(cfg)
	if err != nil {
		return err
	}
	_, err = c.execute(cmdSetConfig, netlink.Acknowledge, attrs)
	return err
}

// Stats reads the counters and the number of live entries.
func (c *Client) Stats() ([]Stat, uint64, error) {
	msgs, err := c.execute(cmdGetStats, 0, nil)
	if err != nil {
		return nil, 0, err
	}
	if len(msgs) != 1 {
		return nil, 0, fmt.Errorf("toactl: %d replies to GET_STATS", len(msgs))
	}
	return decodeStats(msgs[0].Data)
}

// Entries lists the live entries of the connections in the network
// namespace the Client was dialed in. The module allows it to
// CAP_NET_ADMIN only (it lists every server's clients); Lookup needs no
// privilege.
func (c *Client) Entries() ([]Entry, error) {
	msgs, err := c.execute(cmdGetEntries, netlink.Dump, nil)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, 0, len(msgs))
	for _, m := range msgs {
		e, err := decodeEntry(m.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// Lookup returns the entry of the connection between local and client (as
// getpeername reports the client once the module rewrote it), in the
// network namespace the Client was dialed in. The module finds it by
// address (a hash lookup), so its cost does not grow with the connections.
func (c *Client) Lookup(local, client netip.AddrPort) (Entry, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(attrLocal, encodeAddr(local))
	ae.Bytes(attrClient, encodeAddr(client))
	attrs, err := ae.Encode()
	if err != nil {
		return Entry{}, err
	}
	msgs, err := c.execute(cmdGetEntry, 0, attrs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Entry{}, ErrNoEntry
		}
		return Entry{}, err
	}
	if len(msgs) != 1 {
		return Entry{}, fmt.Errorf("toactl: %d replies to GET_ENTRY", len(msgs))
	}
	return decodeEntry(msgs[0].Data)
}
