package ilist_test

import (
	"fmt"

	"github.com/realip/realip/internal/ilist"
)

// session is an item: it carries its own links.
type session struct {
	name  string
	links ilist.Links[*session]
}

func (s *session) Links() *ilist.Links[*session] { return &s.links }

// ExampleList keeps sessions in order of use: the one used last at the
// front, the least recently used at the back, where it is evicted.
func ExampleList() {
	var lru ilist.List[*session]
	a, b, c := &session{name: "a"}, &session{name: "b"}, &session{name: "c"}
	lru.PushFront(a)
	lru.PushFront(b)
	lru.PushFront(c)
	lru.MoveToFront(a) // a used again
	victim := lru.Back()
	lru.Remove(victim)
	fmt.Println("evicted", victim.name)
	for s := lru.Front(); s != nil; s = ilist.Next(s) {
		fmt.Println(s.name)
	}
	// Output:
	// evicted b
	// a
	// c
}
