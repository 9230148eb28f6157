package smolvm

import (
	"bytes"
	"fmt"
	"math/rand/v2"
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
		{"small then big", 8, []string{"ab", "0123456789"}, "ab01\n[… 4 bytes omitted …]\n6789", 4},
		{"wraps in pieces", 8, []string{"abcdef", "gh", "i", "jkl"}, "abcd\n[… 4 bytes omitted …]\nijkl", 4},
		{"head only", 8, []string{"ab", "cd"}, "abcd", 0},
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
// more than the limit.
func TestCaptureMemoryIsBounded(t *testing.T) {
	t.Parallel()
	c := newCapture(64 << 10)
	chunk := bytes.Repeat([]byte("x"), 4093)
	total := 0
	for total < 64<<20 {
		c.Write(chunk)
		total += len(chunk)
		if n := cap(c.head) + cap(c.ring); n > 64<<10 {
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

// TestCaptureMatchesWhole: whatever the writes' sizes, the capture keeps
// exactly the first and the last half of the limit of everything written.
func TestCaptureMatchesWhole(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 500 {
		limit := 2 + rng.IntN(40)
		c := newCapture(limit)
		var all []byte
		for range rng.IntN(30) {
			w := make([]byte, rng.IntN(2*limit))
			for j := range w {
				w[j] = byte('a' + rng.IntN(26))
			}
			c.Write(w)
			all = append(all, w...)
		}
		half := limit / 2
		want, wantDropped := all, int64(0)
		if len(all) > 2*half {
			wantDropped = int64(len(all) - 2*half)
			want = fmt.Appendf(append([]byte{}, all[:half]...), "\n[… %d bytes omitted …]\n", wantDropped)
			want = append(want, all[len(all)-half:]...)
		}
		got, dropped := c.bytes()
		if !bytes.Equal(got, want) || dropped != wantDropped {
			t.Fatalf("case %d (limit %d, %d bytes): got %q (%d dropped), want %q (%d)", i, limit, len(all), got, dropped, want, wantDropped)
		}
	}
}
