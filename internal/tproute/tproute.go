//go:build linux

package tproute

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Routes is the routing Install put in place, in the network namespace
// Install ran in. It is safe for concurrent use.
type Routes struct {
	cfg Config

	mu    sync.Mutex
	conn  *netlink.Conn // nil once removed
	claim int           // the socket bound to ClaimName; -1 once removed
}

// Install puts the routing of c (zero fields take the defaults) in place
// in the calling thread's network namespace, after removing every rule and
// route of ours left there by an earlier run. It fails, changing nothing,
// if another live process holds the namespace's claim (ErrClaimed), if
// table c.Table holds a route realip did not make or a rule realip did not
// make looks it up; and it leaves nothing behind when it fails later.
func Install(c Config) (*Routes, error) {
	c = c.WithDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	claim, err := claimNamespace()
	if err != nil {
		return nil, err
	}
	conn, err := dial()
	if err != nil {
		unix.Close(claim)
		return nil, err
	}
	r := &Routes{cfg: c, conn: conn, claim: claim}
	if err := r.install(); err != nil {
		_ = conn.Close()
		unix.Close(claim)
		return nil, err
	}
	return r, nil
}

// install checks for conflicts, clears leftovers, adds and checks.
func (r *Routes) install() error {
	rules, err := listRules(r.conn)
	if err != nil {
		return err
	}
	table, err := listRoutes(r.conn, r.cfg.Table, 0)
	if err != nil {
		return err
	}
	if err := r.cfg.conflicts(rules, table); err != nil {
		return err
	}
	if err := removeOurs(r.conn); err != nil {
		return fmt.Errorf("tproute: removing what an earlier run left: %w", err)
	}
	if err := r.add(); err != nil {
		return errors.Join(err, removeOurs(r.conn))
	}
	if err := r.check(); err != nil {
		return errors.Join(fmt.Errorf("tproute: the routing just installed does not check out: %w", err),
			removeOurs(r.conn))
	}
	return nil
}

// add adds the routes first, so that no rule ever points to an empty table.
func (r *Routes) add() error {
	for _, rt := range r.cfg.wantRoutes() {
		if err := addRoute(r.conn, rt); err != nil {
			return err
		}
	}
	for _, ru := range r.cfg.wantRules() {
		if err := addRule(r.conn, ru); err != nil {
			return err
		}
	}
	return nil
}

// Config returns the configuration in force, defaults applied.
func (r *Routes) Config() Config {
	return r.cfg.WithDefaults() // a copy, Sources included
}

// Check reports whether every rule and route of the configuration is in
// place and nothing realip did not make uses its table. The error names
// each entry missing or in the way.
func (r *Routes) Check() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return errors.New("tproute: check: the routing was removed")
	}
	return r.check()
}

func (r *Routes) check() error {
	return verify(r.conn, r.cfg)
}

// Verify is Check for a process that did not install the routing itself,
// such as `realip-agent doctor`: it reports whether the routing of c (zero
// fields take the defaults) is in place in the calling thread's network
// namespace, and nothing realip did not make uses its table.
func Verify(c Config) error {
	c = c.WithDefaults()
	if err := c.validate(); err != nil {
		return err
	}
	conn, err := dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	return verify(conn, c)
}

// verify lists the rules and the table of c and compares.
func verify(conn *netlink.Conn, c Config) error {
	rules, err := listRules(conn)
	if err != nil {
		return err
	}
	table, err := listRoutes(conn, c.Table, 0)
	if err != nil {
		return err
	}
	return errors.Join(c.missing(rules, table), c.conflicts(rules, table))
}

// Remove deletes every rule and route of ours in the namespace Install ran
// in, and releases the netlink socket and the namespace's claim. Calling
// it again does nothing. If it fails, both are kept, so Remove can be
// tried again.
func (r *Routes) Remove() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn == nil {
		return nil
	}
	if err := removeOurs(r.conn); err != nil {
		return err
	}
	unix.Close(r.claim)
	r.claim = -1
	err := r.conn.Close()
	r.conn = nil
	if err != nil {
		return fmt.Errorf("tproute: close rtnetlink socket: %w", err)
	}
	return nil
}

// Leftovers describes every rule and route of ours in the calling thread's
// network namespace, one per string: after Remove, or where no agent runs,
// there should be none. It does not depend on a configuration: what
// carries Protocol is ours, whatever its table or priority.
func Leftovers() ([]string, error) {
	conn, err := dial()
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rules, routes, err := listOurs(conn)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ru := range rules {
		out = append(out, ru.String())
	}
	for _, rt := range routes {
		out = append(out, rt.String())
	}
	return out, nil
}

// listOurs returns the rules and routes that carry Protocol.
func listOurs(c *netlink.Conn) ([]rule, []route, error) {
	all, err := listRules(c)
	if err != nil {
		return nil, nil, err
	}
	var rules []rule
	for _, ru := range all {
		if ru.protocol == Protocol {
			rules = append(rules, ru)
		}
	}
	routes, err := listRoutes(c, 0, Protocol)
	if err != nil {
		return nil, nil, err
	}
	return rules, routes, nil
}

// removeOurs deletes every rule, then every route, that carries Protocol.
// It goes on after a failure and returns every error.
func removeOurs(c *netlink.Conn) error {
	rules, routes, err := listOurs(c)
	if err != nil {
		return err
	}
	var errs []error
	for _, ru := range rules {
		errs = append(errs, deleteRule(c, ru))
	}
	for _, rt := range routes {
		errs = append(errs, deleteRoute(c, rt))
	}
	return errors.Join(errs...)
}

// conflicts reports the routes in c's table and the rules looking it up
// that realip did not make.
func (c Config) conflicts(rules []rule, table []route) error {
	var found []string
	for _, rt := range table {
		if rt.protocol != Protocol {
			found = append(found, rt.String())
		}
	}
	for _, ru := range rules {
		if ru.protocol != Protocol && ru.action == actionToTable && ru.table == c.Table {
			found = append(found, ru.String())
		}
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("tproute: table %d (rule priority %d) is already used by routes or rules realip did not make: %s; "+
		"choose another table in the configuration", c.Table, c.Priority, strings.Join(found, "; "))
}

// missing reports the rules and routes of c that are not in place.
func (c Config) missing(rules []rule, table []route) error {
	var lost []string
	for _, want := range c.wantRoutes() {
		if !slices.ContainsFunc(table, want.same) {
			lost = append(lost, want.String())
		}
	}
	for _, want := range c.wantRules() {
		if !slices.ContainsFunc(rules, want.same) {
			lost = append(lost, want.String())
		}
	}
	if len(lost) == 0 {
		return nil
	}
	return fmt.Errorf("tproute: missing: %s", strings.Join(lost, "; "))
}
