package smolvm

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func TestCaptureKeepsHeadAndTail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		limit   int
		writes  []string
		want    string
		dropped int64
	}{
		{"fits", 8, []string{"abc", "de"}, "abcde", 0},
		{"exactly", 8, []string{"abcdefgh"}, "abcdefgh", 0},
		{"one big write", 8, []string{"0123456789"}, "0123\n[… 2 bytes omitted …]\n6789", 2},
		{"many small writes", 8, strings.Split("abcdefghijklmnopqrstuvwxyz", ""), "abcd\n[… 18 bytes omitted …]\nwxyz", 18},
		{"big then small", 8, []string{"0123456789", "ab"}, "0123\n[… 4 bytes omitted …]\n89ab", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCapture(tt.limit)
			for _, w := range tt.writes {
				if n, err := c.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			got, dropped := c.bytes()
			if string(got) != tt.want || dropped != tt.dropped {
				t.Errorf("got %q (%d dropped), want %q (%d)", got, dropped, tt.want, tt.dropped)
			}
		})
	}
}

// TestCaptureMemoryIsBounded: 64 MiB through a 64 KiB capture never holds
// more than twice the limit.
func TestCaptureMemoryIsBounded(t *testing.T) {
	t.Parallel()
	c := newCapture(64 << 10)
	chunk := bytes.Repeat([]byte("x"), 4093)
	total := 0
	for total < 64<<20 {
		c.Write(chunk)
		total += len(chunk)
		if n := cap(c.head) + cap(c.tail); n > 2*64<<10+len(chunk) {
			t.Fatalf("capture holds %d bytes after %d written", n, total)
		}
	}
	got, dropped := c.bytes()
	if want := int64(total - 64<<10); dropped != want {
		t.Errorf("dropped %d, want %d", dropped, want)
	}
	if !bytes.Contains(got, []byte(fmt.Sprintf("[… %d bytes omitted …]", dropped))) {
		t.Error("no omission marker")
	}
}
