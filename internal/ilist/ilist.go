package ilist

// Links are an item's place in a List. The zero value is in no list.
type Links[P any] struct {
	prev, next P
	in         bool // in a list
}

// Item is a pointer to an item with Links: P is the pointer type itself
// (*conn, say), whose zero value, nil, ends the list.
type Item[P any] interface {
	comparable
	Links() *Links[P]
}

// List is a list of items, front (most recent) to back. The zero value is
// an empty list.
type List[P Item[P]] struct {
	front, back P
	n           int
}

// Len is the number of items in l.
func (l *List[P]) Len() int { return l.n }

// Front is the first item; the zero P (nil) when l is empty.
func (l *List[P]) Front() P { return l.front }

// Back is the last item; the zero P (nil) when l is empty.
func (l *List[P]) Back() P { return l.back }

// Next is the item after p in its list; the zero P (nil) at the back.
func Next[P Item[P]](p P) P { return p.Links().next }

// Prev is the item before p in its list; the zero P (nil) at the front.
func Prev[P Item[P]](p P) P { return p.Links().prev }

// PushFront adds p, which must be in no list, at the front of l.
func (l *List[P]) PushFront(p P) {
	var zero P
	lk := p.Links()
	lk.prev, lk.next, lk.in = zero, l.front, true
	if l.front != zero {
		l.front.Links().prev = p
	}
	l.front = p
	if l.back == zero {
		l.back = p
	}
	l.n++
}

// Remove takes p out of l, where it must be if it is in a list; an item
// in no list (never added, or removed already) is left as it is.
func (l *List[P]) Remove(p P) {
	var zero P
	lk := p.Links()
	if !lk.in {
		return
	}
	if lk.prev != zero {
		lk.prev.Links().next = lk.next
	} else {
		l.front = lk.next
	}
	if lk.next != zero {
		lk.next.Links().prev = lk.prev
	} else {
		l.back = lk.prev
	}
	lk.prev, lk.next, lk.in = zero, zero, false
	l.n--
}

// MoveToFront moves p, which must be in l, to the front of l.
func (l *List[P]) MoveToFront(p P) {
	if l.front == p {
		return
	}
	l.Remove(p)
	l.PushFront(p)
}
