package worker

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
)

// TestSimLogDurations: through the real client and simulator, every log
// line that times something ("phase done", "task finished", each "smolvm"
// call) says so in milliseconds under duration_ms, never under a bare
// "duration". Each phase's logged time is the result's time for that
// phase, in milliseconds, and the task's is at least their sum.
func TestSimLogDurations(t *testing.T) {
	t.Parallel()
	h, logs, _ := simHandler(t, nil)
	var w results
	if err := h.Run(context.Background(), Meta{ID: "durations"}, payload(t, basic), &w); err != nil {
		t.Fatal(err)
	}
	res := w.result(t)

	type phase struct {
		name string
		ms   float64
	}
	var phases []phase
	var finished []float64
	calls := 0
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		msg, _ := l["message"].(string)
		if msg != "phase done" && msg != "task finished" && msg != "smolvm" {
			continue
		}
		if _, ok := l["duration"]; ok {
			t.Errorf("%q line has a duration without a unit: %s", msg, sc.Text())
		}
		d, ok := l["duration_ms"].(float64)
		if !ok || d < 0 {
			t.Errorf("%q line has no duration_ms number: %s", msg, sc.Text())
			continue
		}
		switch msg {
		case "phase done":
			name, _ := l["phase"].(string)
			phases = append(phases, phase{name, d})
		case "task finished":
			finished = append(finished, d)
		case "smolvm":
			calls++
		}
	}
	if len(finished) != 1 || calls < 5 || len(res.Phases) < 5 || len(phases) < len(res.Phases) {
		t.Fatalf("%d \"task finished\" lines, %d \"smolvm\" lines, %d \"phase done\" lines for %d phases in the result:\n%s",
			len(finished), calls, len(phases), len(res.Phases), logs.String())
	}
	sum := 0.0
	for i, p := range res.Phases {
		got := phases[i]
		if got.name != p.Name || math.Abs(got.ms-p.Seconds*1000) > 1e-6 {
			t.Errorf("phase %d logged as %s %v ms; the result has %s %v s", i, got.name, got.ms, p.Name, p.Seconds)
		}
		sum += got.ms
	}
	if finished[0] < sum {
		t.Errorf("task finished after %v ms, less than its phases' %v ms", finished[0], sum)
	}
}
