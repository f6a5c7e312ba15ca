// Package procstat reads a process's memory from /proc (Linux).
package procstat

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Memory is a process's memory as /proc/<pid>/status reports it, in bytes.
type Memory struct {
	// PeakRSS (VmHWM) is the peak resident set, file-backed mappings included.
	PeakRSS int64
	// RSS (VmRSS) is the resident set now: RssAnon (heap, stacks) plus RssFile (mapped files).
	RSS, RssAnon, RssFile int64
}

// Read returns the memory of process pid; pid 0 is the calling process. Unlike getrusage's
// maxrss of a child, it covers the process's own memory only, not what its parent held when
// it forked.
func Read(pid int) (Memory, error) {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	f, err := os.Open(path)
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	fields := map[string]*int64{"VmHWM:": &m.PeakRSS, "VmRSS:": &m.RSS, "RssAnon:": &m.RssAnon, "RssFile:": &m.RssFile}
	found := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, _ := strings.Cut(sc.Text(), "\t")
		if p, ok := fields[name]; ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return Memory{}, fmt.Errorf("%s %s: %w", path, name, err)
			}
			*p = kb << 10
			found++
		}
	}
	if found == 0 {
		return Memory{}, fmt.Errorf("no memory figures in %s", path)
	}
	return m, sc.Err()
}

// PeakRSS returns the peak resident set size in bytes (VmHWM) of process pid (0: this one).
func PeakRSS(pid int) (int64, error) {
	m, err := Read(pid)
	return m.PeakRSS, err
}

// Sampler samples this process's resident memory every interval until Stop: the kernel keeps
// a peak of the whole resident set only (VmHWM), not of its anonymous (heap, stacks) and
// file-backed (mapped files) parts.
type Sampler struct {
	pid        int
	stop       chan struct{}
	done       chan struct{}
	mu         sync.Mutex
	anon, file int64
}

// Sample starts sampling this process.
func Sample(interval time.Duration) *Sampler { return SampleProcess(0, interval) }

// SampleProcess starts sampling process pid (0: this one).
func SampleProcess(pid int, interval time.Duration) *Sampler {
	s := &Sampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *Sampler) sample() {
	if m, err := Read(s.pid); err == nil {
		s.mu.Lock()
		s.anon, s.file = max(s.anon, m.RssAnon), max(s.file, m.RssFile)
		s.mu.Unlock()
	}
}

// Stop stops sampling and returns the highest anonymous and file-backed resident memory seen,
// in bytes.
func (s *Sampler) Stop() (anon, file int64) {
	close(s.stop)
	<-s.done
	s.sample()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.anon, s.file
}

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ): 100 on every Linux platform
// Go supports.
const clockTicks = 100

// CPU returns the CPU time (user plus system) process pid (0: this one) has used so far,
// from /proc/<pid>/stat.
func CPU(pid int) (time.Duration, error) {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after its closing parenthesis
	// start at field 3 (state). utime and stime are fields 14 and 15.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("%s: no command name", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%s: %d fields after the command name", path, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}
