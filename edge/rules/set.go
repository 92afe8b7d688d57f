package rules

import (
	"fmt"
	"iter"
)

// Set is the rules of one file and the origin groups they may use. Get one
// from Parse or Load; the zero Set holds no rules.
type Set struct {
	Rules  []Rule // in file order
	Groups Groups

	// owner[proto][port] is 1 + the index in Rules of the rule that
	// forwards port, or 0. It is allocated for a protocol on first use.
	owner [UDP + 1][]uint16
}

// Lookup returns the rule that forwards port of proto, and the origin port
// that port maps to. ok is false when no rule forwards it.
func (s *Set) Lookup(proto Proto, port uint16) (r *Rule, originPort uint16, ok bool) {
	if proto != TCP && proto != UDP {
		return nil, 0, false
	}
	owner := s.owner[proto]
	if int(port) >= len(owner) || owner[port] == 0 {
		return nil, 0, false
	}
	r = &s.Rules[owner[port]-1]
	return r, r.originPort(port), true
}

// Mappings yields every forwarding port of the rule, in the order written,
// with the origin port it maps to.
func (r Rule) Mappings() iter.Seq2[uint16, uint16] {
	return func(yield func(port, originPort uint16) bool) {
		for _, pr := range r.Ports {
			for p := int(pr.Lo); p <= int(pr.Hi); p++ {
				if !yield(uint16(p), r.originPort(uint16(p))) {
					return
				}
			}
		}
	}
}

// add appends r to the set after claiming its forwarding ports. It
// rejects r, claiming nothing, when a port is already taken or appears
// twice in r.
func (s *Set) add(r Rule) error {
	if s.owner[r.Proto] == nil {
		s.owner[r.Proto] = make([]uint16, MaxForwardPort+1)
	}
	owner := s.owner[r.Proto]
	id := uint16(len(s.Rules) + 1)
	if err := s.claim(owner, r, id); err != nil {
		release(owner, r, id)
		return err
	}
	s.Rules = append(s.Rules, r)
	return nil
}

// claim marks the ports of r as owned by id and stops at the first port
// that is already owned.
func (s *Set) claim(owner []uint16, r Rule, id uint16) error {
	for _, pr := range r.Ports {
		for p := int(pr.Lo); p <= int(pr.Hi); p++ {
			switch o := owner[p]; o {
			case 0:
				owner[p] = id
			case id:
				return fmt.Errorf("port %d appears more than once in this rule", p)
			default:
				return fmt.Errorf("%s port %d is already used by the rule on line %d", r.Proto, p, s.Rules[o-1].Line)
			}
		}
	}
	return nil
}

// release undoes a failed claim.
func release(owner []uint16, r Rule, id uint16) {
	for _, pr := range r.Ports {
		for p := int(pr.Lo); p <= int(pr.Hi); p++ {
			if owner[p] == id {
				owner[p] = 0
			}
		}
	}
}
