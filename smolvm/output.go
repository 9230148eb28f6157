package smolvm

import (
	"fmt"
)

// outputLimit is how many bytes of each output stream a call keeps: half
// from the start, half from the end.
const outputLimit = 64 << 10

// capture is an io.Writer that keeps the first and the last limit/2 bytes
// written to it and counts what it drops, so an agent that prints gigabytes
// costs a fixed amount of memory: at most limit bytes, the tail kept in a
// ring that newer bytes overwrite.
type capture struct {
	half    int
	head    []byte
	ring    []byte // the newest bytes; once full (len half), oldest at pos
	pos     int
	dropped int64
}

func newCapture(limit int) *capture {
	if limit <= 0 {
		limit = outputLimit
	}
	return &capture{half: max(limit/2, 1)}
}

func (c *capture) Write(p []byte) (int, error) {
	n := len(p)
	if room := c.half - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = appendUpTo(c.head, p[:k], c.half)
		p = p[k:]
	}
	if room := c.half - len(c.ring); room > 0 && len(p) > 0 {
		k := min(room, len(p))
		c.ring = appendUpTo(c.ring, p[:k], c.half)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	// The ring is full: each new byte drops the oldest one.
	c.dropped += int64(len(p))
	if len(p) >= c.half {
		p = p[len(p)-c.half:]
	}
	k := copy(c.ring[c.pos:], p)
	copy(c.ring, p[k:])
	c.pos = (c.pos + len(p)) % c.half
	return n, nil
}

// appendUpTo appends p to b, whose length will never pass limit: it grows
// b as append would, but never to a capacity over limit.
func appendUpTo(b, p []byte, limit int) []byte {
	if need := len(b) + len(p); need > cap(b) {
		nb := make([]byte, len(b), min(max(2*cap(b), need), limit))
		copy(nb, b)
		b = nb
	}
	return append(b, p...)
}

// bytes returns what was kept, with a marker line where bytes were dropped,
// and how many were dropped.
func (c *capture) bytes() ([]byte, int64) {
	out := make([]byte, 0, len(c.head)+len(c.ring)+48)
	out = append(out, c.head...)
	if c.dropped > 0 {
		out = fmt.Appendf(out, "\n[… %d bytes omitted …]\n", c.dropped)
	}
	out = append(out, c.ring[c.pos:]...)
	return append(out, c.ring[:c.pos]...), c.dropped
}
