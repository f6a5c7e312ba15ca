package follow

import (
	"context"
	"testing"
)

// A replica starts at most Starting's capacity journals at once; a start that ends gives its
// place back once, however often it says so, and a start whose context ends gets none.
func TestJournalsStartAFewAtATime(t *testing.T) {
	s := &Source{Starting: NewStarting(2)}
	first, second := s.startSlot(t.Context()), s.startSlot(t.Context())
	if first == nil || second == nil {
		t.Fatal("no place for the first two starts")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if s.startSlot(ctx) != nil {
		t.Fatal("a third start got a place while two start")
	}
	first()
	first()
	if len(s.Starting) != 1 {
		t.Fatalf("%d places taken after the first start ended (twice), want 1", len(s.Starting))
	}
	third := s.startSlot(t.Context())
	if third == nil || len(s.Starting) != 2 {
		t.Fatal("the place given back was not taken")
	}
	second()
	third()
	if len(s.Starting) != 0 {
		t.Fatalf("%d places taken after every start ended", len(s.Starting))
	}
	if (&Source{}).startSlot(ctx) == nil {
		t.Fatal("without a bound, a start waits")
	}
}
