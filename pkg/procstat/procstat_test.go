package procstat

import (
	"testing"
	"time"
)

var sink []byte

func TestPeakAndAnonGrowWithMemoryTouched(t *testing.T) {
	before, err := Read(0)
	if err != nil {
		t.Fatal(err)
	}
	s := Sample(time.Millisecond)
	sink = make([]byte, 64<<20)
	for i := range sink {
		sink[i] = byte(i)
	}
	anon, _ := s.Stop()
	after, err := Read(0)
	if err != nil {
		t.Fatal(err)
	}
	if after.PeakRSS-before.PeakRSS < 60<<20 {
		t.Errorf("peak RSS went from %d to %d after touching 64 MiB", before.PeakRSS, after.PeakRSS)
	}
	if anon-before.RssAnon < 60<<20 || after.RssAnon < anon/2 {
		t.Errorf("anonymous memory: %d before, sampled peak %d, %d after touching 64 MiB", before.RssAnon, anon,
			after.RssAnon)
	}
	if after.RSS < after.RssAnon || after.RSS < after.RssFile {
		t.Errorf("RSS %d is less than its parts %d + %d", after.RSS, after.RssAnon, after.RssFile)
	}
	sink = nil
}

func TestCPUGrowsWithWork(t *testing.T) {
	before, err := CPU(0)
	if err != nil {
		t.Fatal(err)
	}
	// Spin until the kernel's accounting (10 ms ticks) shows at least 200 ms more.
	deadline := time.Now().Add(10 * time.Second)
	x := uint64(1)
	var after time.Duration
	for time.Now().Before(deadline) {
		for i := range 1 << 20 {
			x = x*6364136223846793005 + uint64(i)
		}
		if after, err = CPU(0); err != nil {
			t.Fatal(err)
		}
		if after-before >= 200*time.Millisecond {
			break
		}
	}
	if after-before < 200*time.Millisecond {
		t.Errorf("CPU time went from %s to %s in 10 s of spinning (x=%d)", before, after, x)
	}
	if _, err := CPU(1 << 30); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
