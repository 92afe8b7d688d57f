package ilist

import (
	"slices"
	"testing"
)

type item struct {
	id    int
	links Links[*item]
}

func (it *item) Links() *Links[*item] { return &it.links }

// ids lists l front to back, and checks that back to front is the same
// reversed and that Len agrees.
func ids(t *testing.T, l *List[*item]) []int {
	t.Helper()
	var fwd, bwd []int
	for p := l.Front(); p != nil; p = Next(p) {
		fwd = append(fwd, p.id)
	}
	for p := l.Back(); p != nil; p = Prev(p) {
		bwd = append(bwd, p.id)
	}
	slices.Reverse(bwd)
	if !slices.Equal(fwd, bwd) || len(fwd) != l.Len() {
		t.Fatalf("list front to back %v, back to front reversed %v, Len %d", fwd, bwd, l.Len())
	}
	return fwd
}

func TestList(t *testing.T) {
	items := make([]*item, 5)
	for i := range items {
		items[i] = &item{id: i}
	}
	tests := []struct {
		name string
		ops  func(l *List[*item])
		want []int
	}{
		{"empty", func(l *List[*item]) {}, nil},
		{"push", func(l *List[*item]) {
			for _, it := range items[:3] {
				l.PushFront(it)
			}
		}, []int{2, 1, 0}},
		{"remove middle, front, back", func(l *List[*item]) {
			for _, it := range items {
				l.PushFront(it)
			}
			l.Remove(items[2])
			l.Remove(items[4])
			l.Remove(items[0])
		}, []int{3, 1}},
		{"remove the only one", func(l *List[*item]) {
			l.PushFront(items[0])
			l.Remove(items[0])
		}, nil},
		{"move to front", func(l *List[*item]) {
			for _, it := range items[:4] {
				l.PushFront(it)
			}
			l.MoveToFront(items[0]) // the back
			l.MoveToFront(items[2]) // the middle
			l.MoveToFront(items[2]) // already the front
		}, []int{2, 0, 3, 1}},
		{"removing twice, or what was never added, changes nothing", func(l *List[*item]) {
			l.PushFront(items[0])
			l.PushFront(items[1])
			l.Remove(items[0])
			l.Remove(items[0])
			l.Remove(items[2])
		}, []int{1}},
		{"removed items go back in", func(l *List[*item]) {
			l.PushFront(items[0])
			l.PushFront(items[1])
			l.Remove(items[0])
			l.PushFront(items[0])
		}, []int{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, it := range items {
				it.links = Links[*item]{}
			}
			var l List[*item]
			tt.ops(&l)
			if got := ids(t, &l); !slices.Equal(got, tt.want) {
				t.Errorf("list %v, want %v", got, tt.want)
			}
		})
	}
}
