package worker

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/bot-bottle/bottleq/internal/lograte"
)

// TestAsynqLoggerCollapsesRepeats drives the adapter asynq logs through,
// with a fake clock: a warning or error repeated within the window is
// written once, the next one written counts those held back; info and
// debug lines, and lines below the level, are never held back or counted.
func TestAsynqLoggerCollapsesRepeats(t *testing.T) {
	t.Parallel()
	type line struct {
		Level      string
		Message    string
		Suppressed int
	}
	const refused = "Dequeue error: UNKNOWN: redis eval error: dial tcp 127.0.0.1:6379: connect: connection refused"
	tests := []struct {
		name  string
		level zerolog.Level
		log   func(a asynqLogger, tick func(time.Duration))
		want  []line
	}{
		{"an outage's repeated error", zerolog.DebugLevel, func(a asynqLogger, tick func(time.Duration)) {
			for range 12 { // 12 s, one a second
				a.Error(refused)
				tick(time.Second)
			}
		}, []line{{"error", refused, 0}, {"error", refused, 4}, {"error", refused, 4}}},
		{"warnings too, counted with errors of the same message", zerolog.DebugLevel, func(a asynqLogger, tick func(time.Duration)) {
			a.Warn("w")
			a.Error("w")
			a.Warn("w")
			tick(lograte.DefaultWindow)
			a.Warn("w")
		}, []line{{"warn", "w", 0}, {"warn", "w", 2}}},
		{"distinct messages each get a line", zerolog.DebugLevel, func(a asynqLogger, _ func(time.Duration)) {
			a.Error("Dequeue error: ", "EOF")
			a.Error("Dequeue error: ", "connection refused")
			a.Error("Failed to write server state data")
		}, []line{{"error", "Dequeue error: EOF", 0}, {"error", "Dequeue error: connection refused", 0}, {"error", "Failed to write server state data", 0}}},
		{"info and debug are not held back", zerolog.DebugLevel, func(a asynqLogger, _ func(time.Duration)) {
			a.Info("Starting processing")
			a.Info("Starting processing")
			a.Debug("d")
			a.Debug("d")
		}, []line{{"info", "Starting processing", 0}, {"info", "Starting processing", 0}, {"debug", "d", 0}, {"debug", "d", 0}}},
		{"below the level: not written, not counted", zerolog.ErrorLevel, func(a asynqLogger, tick func(time.Duration)) {
			a.Warn("x")
			a.Error("x")
			a.Warn("x")
			a.Error("x")
			tick(lograte.DefaultWindow)
			a.Error("x")
		}, []line{{"error", "x", 0}, {"error", "x", 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
			var buf bytes.Buffer
			a := asynqLogger{
				l:    zerolog.New(&buf).Level(tt.level),
				rate: &lograte.Limiter{Now: func() time.Time { return now }},
			}
			tt.log(a, func(d time.Duration) { now = now.Add(d) })
			var got []line
			for _, s := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
				var l line
				if err := json.Unmarshal([]byte(s), &l); err != nil {
					t.Fatalf("not a JSON line: %q", s)
				}
				got = append(got, l)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("%d lines, want %d:\n%s", len(got), len(tt.want), buf.String())
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}
