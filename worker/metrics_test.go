package worker

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bot-bottle/bottleq/smolvm"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f := newFake()
	failStart := true
	f.start = func(context.Context, string) error {
		if failStart {
			failStart = false
			return &smolvm.Error{Op: "machine start", ExitCode: 1, Message: "injected"}
		}
		return nil
	}
	h, _ := newHandler(t, f, func(c *Config) { c.Hooks = m.Hooks() })
	ctx := context.Background()
	if err := h.Run(ctx, Meta{ID: "m1"}, payload(t, basic), nil); err == nil {
		t.Fatal("first attempt should fail at start")
	}
	if err := h.Run(ctx, Meta{ID: "m1", Retried: 1}, payload(t, basic), nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Run(ctx, Meta{ID: "m2"}, []byte(`{}`), nil); err == nil {
		t.Fatal("invalid payload accepted")
	}
	m.Reaped("bq-x")
	m.ObserveSmolvm(smolvm.Call{Op: "machine start"})

	for _, c := range []struct {
		name string
		got  float64
		want float64
	}{
		{"completed", testutil.ToFloat64(m.tasks.WithLabelValues(OutcomeCompleted)), 1},
		{"failed", testutil.ToFloat64(m.tasks.WithLabelValues(OutcomeFailed)), 1},
		{"invalid", testutil.ToFloat64(m.tasks.WithLabelValues(OutcomeInvalid)), 1},
		{"failures at start", testutil.ToFloat64(m.retries.WithLabelValues("start")), 1},
		{"vms in flight", testutil.ToFloat64(m.vms), 0},
		{"pack miss", testutil.ToFloat64(m.packCache.WithLabelValues("miss")), 1},
		{"pack hit", testutil.ToFloat64(m.packCache.WithLabelValues("hit")), 1},
		{"reaped", testutil.ToFloat64(m.reaped), 1},
		{"smolvm calls", testutil.ToFloat64(m.smolvmCalls.WithLabelValues("machine start", "ok")), 1},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := testutil.CollectAndCount(m.phase); n != 8 {
		t.Errorf("%d phase series, want one per phase (8)", n)
	}
	out, err := testutil.CollectAndLint(m.phase)
	if err != nil || len(out) != 0 {
		t.Errorf("lint: %v %v", out, err)
	}
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "bottleq_") {
			t.Errorf("metric %s lacks the bottleq_ prefix", mf.GetName())
		}
	}
}
