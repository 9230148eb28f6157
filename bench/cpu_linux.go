package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSnap is the machine's busy CPU time and the harness's own share of it
// (itself, every child it waited for, the running workers with the children
// they waited for, and redis-server).
type cpuSnap struct {
	at          time.Time
	busy, owned float64 // seconds
}

func (b *bench) cpuSnapshot() cpuSnap {
	s := cpuSnap{at: time.Now()}
	if raw, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(raw), "\n")
		f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			if i >= 8 { // guest, guest_nice are already in user
				break
			}
			n, _ := strconv.ParseFloat(v, 64)
			s.busy += n / 100
		}
	}
	for _, who := range []int{syscall.RUSAGE_SELF, syscall.RUSAGE_CHILDREN} {
		var ru syscall.Rusage
		if syscall.Getrusage(who, &ru) == nil {
			s.owned += time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		}
	}
	b.mu.Lock()
	running := b.running
	b.mu.Unlock()
	for _, w := range running {
		select {
		case <-w.done: // waited for: in RUSAGE_CHILDREN already
		default:
			if c, err := procCPU(w.cmd.Process.Pid); err == nil {
				s.owned += c.self + c.children
			}
		}
	}
	if b.redis != nil && b.redis.cmd != nil {
		if c, err := procCPU(b.redis.cmd.Process.Pid); err == nil {
			s.owned += c.self
		}
	}
	return s
}

// foreignSince is how many cores, on average, processes outside the
// harness's tree kept busy since s0.
func (s cpuSnap) foreignSince(s0 cpuSnap) float64 {
	secs := s.at.Sub(s0.at).Seconds()
	if secs <= 0 {
		return 0
	}
	return max(0, (s.busy-s0.busy)-(s.owned-s0.owned)) / secs
}
