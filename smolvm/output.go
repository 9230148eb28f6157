package smolvm

import (
	"fmt"
)

// outputLimit is how many bytes of each output stream a call keeps: half
// from the start, half from the end.
const outputLimit = 64 << 10

// capture is an io.Writer that keeps the first and the last limit/2 bytes
// written to it and counts what it drops, so an agent that prints gigabytes
// costs a fixed amount of memory.
type capture struct {
	half    int
	head    []byte
	tail    []byte // the newest bytes; compacted to half when it doubles
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
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if len(p) >= c.half {
		c.dropped += int64(len(c.tail) + len(p) - c.half)
		c.tail = append(c.tail[:0], p[len(p)-c.half:]...)
		return n, nil
	}
	c.tail = append(c.tail, p...)
	if over := len(c.tail) - c.half; over > 0 && len(c.tail) >= 2*c.half {
		c.dropped += int64(over)
		c.tail = append(c.tail[:0], c.tail[over:]...)
	}
	return n, nil
}

// bytes returns what was kept, with a marker line where bytes were dropped,
// and how many were dropped.
func (c *capture) bytes() ([]byte, int64) {
	t := c.tail
	dropped := c.dropped
	if over := len(t) - c.half; over > 0 {
		dropped += int64(over)
		t = t[over:]
	}
	out := make([]byte, 0, len(c.head)+len(t)+48)
	out = append(out, c.head...)
	if dropped > 0 {
		out = fmt.Appendf(out, "\n[… %d bytes omitted …]\n", dropped)
	}
	return append(out, t...), dropped
}
