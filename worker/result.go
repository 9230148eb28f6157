package worker

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/bot-bottle/bottleq/tasks"
)

// maxResultBytes caps a task's result as the JSON written to Redis. smolvm
// keeps the head and tail of each output stream (32 KiB each), but JSON
// escaping can make a byte six ("\u0001"): a result over the cap has the
// kept output of its streams cut further, in the middle, until it fits.
const maxResultBytes = 256 << 10

// omittedMarker stands where bytes of a stream were cut, with their count,
// as smolvm's capture marks them.
const omittedMarker = "\n[… %d bytes omitted …]\n"

// encodeResult returns res as JSON of at most limit bytes when cutting its
// stdout and stderr can make it fit: each keeps its head and tail, and the
// marker and StdoutOmitted/StderrOmitted count every byte cut.
func encodeResult(res tasks.Result, limit int) ([]byte, error) {
	b, err := json.Marshal(res)
	// Each pass cuts the streams by what the JSON is over; escaping of what
	// remains is measured exactly, so one pass almost always does.
	for try := 0; err == nil && len(b) > limit && try < 4; try++ {
		out, errs := jsonLen(res.Stdout), jsonLen(res.Stderr)
		if out+errs == 0 {
			break // the rest of the result is over the cap on its own
		}
		outBudget, errBudget := share(out+errs-(len(b)-limit), out, errs)
		res.Stdout, res.StdoutOmitted = shrink(res.Stdout, res.StdoutOmitted, outBudget)
		res.Stderr, res.StderrOmitted = shrink(res.Stderr, res.StderrOmitted, errBudget)
		b, err = json.Marshal(res)
	}
	return b, err
}

// share splits avail bytes between two streams that need a and b: one that
// needs less than half gives the rest to the other.
func share(avail, a, b int) (int, int) {
	avail = max(avail, 0)
	half := avail / 2
	switch {
	case a <= half:
		return a, avail - a
	case b <= avail-half:
		return avail - b, b
	}
	return half, avail - half
}

// shrink cuts the middle of s, the kept part of a stream of which omitted
// bytes were cut already (where a marker says so), until s is at most
// budget bytes as a JSON string without its quotes. It returns the new
// text, with one marker counting everything cut, and the new count.
func shrink(s string, omitted int64, budget int) (string, int64) {
	if jsonLen(s) <= budget {
		return s, omitted
	}
	head, tail := s[:len(s)/2], s[len(s)/2:]
	if omitted > 0 {
		if old := fmt.Sprintf(omittedMarker, omitted); strings.Contains(s, old) {
			head, tail, _ = strings.Cut(s, old)
		}
	}
	cut := func(k int) (string, int64) {
		a := min(k, len(head))
		for a > 0 && a < len(head) && !utf8.RuneStart(head[a]) {
			a--
		}
		from := len(tail) - min(k, len(tail))
		for from < len(tail) && from > 0 && !utf8.RuneStart(tail[from]) {
			from++
		}
		n := omitted + int64(len(head)-a) + int64(from)
		return head[:a] + fmt.Sprintf(omittedMarker, n) + tail[from:], n
	}
	// The largest k that fits: keep k bytes of the head and of the tail.
	lo, hi := 0, max(len(head), len(tail))
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if t, _ := cut(mid); jsonLen(t) <= budget {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	if t, n := cut(lo); jsonLen(t) <= budget {
		return t, n
	}
	return "", omitted + int64(len(head)+len(tail)) // not even the marker fits
}

// jsonLen is the length of s as a JSON string, without its quotes.
func jsonLen(s string) int {
	b, _ := json.Marshal(s) // a string always encodes
	return len(b) - 2
}
