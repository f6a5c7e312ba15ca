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
		t.Errorf("anonymous memory: %d before, sampled peak %d, %d after touching 64 MiB", before.RssAnon, anon, after.RssAnon)
	}
	if after.RSS < after.RssAnon || after.RSS < after.RssFile {
		t.Errorf("RSS %d is less than its parts %d + %d", after.RSS, after.RssAnon, after.RssFile)
	}
	sink = nil
}
