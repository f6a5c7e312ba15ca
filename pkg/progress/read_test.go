package progress

import "testing"

// Of reads back what Say and the restorer write.
func TestOfReadsHowFarAMessageSays(t *testing.T) {
	for msg, want := range map[string][2]float64{
		"taking snapshot: " + Say(514<<20, 1100<<20):                                           {46, 100},
		"uploading: 12 of 12 MiB (100%)":                                                       {100, 100},
		"members restored 1/3":                                                                 {1, 3},
		"fetched etcd-0 10 of 40 KiB, etcd-1 30 of 40 KiB":                                     {40, 80},
		"members restored 0/3; fetched etcd-0 854 of 854 B (100%), etcd-1 854 of 854 B (100%)": {0, 3},
		"members restored 0/3; fetched etcd-0 10 of 40 KiB (25%), etcd-1 40 of 40 KiB (100%)":  {50, 80},
		"done: members restored 3/3":                                                           {3, 3},
	} {
		done, total, ok := Of(msg)
		if !ok || done != want[0] || total != want[1] {
			t.Errorf("Of(%q) = %v of %v (%v), want %v of %v", msg, done, total, ok, want[0], want[1])
		}
	}
	for _, msg := range []string{"queued", "", "taking snapshot (attempt 1 of 3)"} {
		if _, _, ok := Of(msg); ok {
			t.Errorf("Of(%q) says it counts something", msg)
		}
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 836: "836 B", 12595: "12.3 KiB", 223827903: "213.5 MiB",
		1153789984: "1.07 GiB"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}
