//go:build !linux

package main

import "time"

type cpuSnap struct{ at time.Time }

func (b *bench) cpuSnapshot() cpuSnap { return cpuSnap{at: time.Now()} }

func (s cpuSnap) foreignSince(cpuSnap) float64 { return 0 }
