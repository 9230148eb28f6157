package worker

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// series gathers reg as `name{l="v",...}` → value: a counter's or gauge's
// value, a histogram's sample count. It reads what reg holds and creates
// nothing, unlike WithLabelValues.
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[key] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key] = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				out[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

// TestMetricsSeriesExistAtZero: before any task, every series an alert
// may name is there at 0, each metric has exactly its known label values,
// and the registry passes Prometheus's lint.
func TestMetricsSeriesExistAtZero(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	got := series(t, reg)

	want := map[string]int{}
	add := func(name, label string, values ...string) {
		for _, v := range values {
			want[fmt.Sprintf("%s{%s=%q}", name, label, v)]++
		}
	}
	add("bottleq_attempts_total", "outcome", "completed", "retried", "failed", "invalid", "cancelled", "requeued")
	add("bottleq_tasks_total", "outcome", "completed", "failed", "invalid", "cancelled")
	add("bottleq_agent_exits_total", "exit", "zero", "nonzero", "timeout")
	add("bottleq_task_agent_exits_total", "exit", "zero", "nonzero", "timeout")
	add("bottleq_attempt_failures_total", "phase", "pack", "create", "start", "ready", "files", "exec", "artifacts", "stop", "commit")
	add("bottleq_phase_duration_seconds", "phase", "pack", "create", "start", "ready", "files", "exec", "artifacts", "stop", "commit", "delete")
	add("bottleq_pack_cache_total", "result", "hit", "miss")
	for _, op := range []string{"--version", "pack create", "machine create", "machine start", "machine stop", "machine delete", "machine cp", "machine exec", "machine ls", "machine status"} {
		want[fmt.Sprintf(`bottleq_smolvm_calls_total{op=%q,result="ok"}`, op)]++
		want[fmt.Sprintf(`bottleq_smolvm_calls_total{op=%q,result="error"}`, op)]++
		add("bottleq_smolvm_call_duration_seconds", "op", op)
	}
	for _, name := range []string{"bottleq_vms_in_flight", "bottleq_reaped_vms_total", "bottleq_vm_delete_failures_total"} {
		want[name]++
	}
	for key := range want {
		v, ok := got[key]
		if !ok {
			t.Errorf("%s is missing before the first event", key)
		} else if v != 0 {
			t.Errorf("%s = %v at start, want 0", key, v)
		}
	}
	for key := range got {
		if want[key] == 0 {
			t.Errorf("unexpected series %s", key)
		}
		if !strings.HasPrefix(key, "bottleq_") {
			t.Errorf("metric %s lacks the bottleq_ prefix", key)
		}
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil || len(problems) != 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}

// TestMetricsAgentExitIsNotTheOutcome: a task whose agent exits 3, or is
// killed by its timeout, completed as a task; its agent's exit is counted
// apart, as nonzero or timeout, never as a success.
func TestMetricsAgentExitIsNotTheOutcome(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		res  smolvm.ExecResult
		exit string
	}{
		{"exit 0", smolvm.ExecResult{}, ExitZero},
		{"exit 3", smolvm.ExecResult{ExitCode: 3, Stderr: []byte("bad\n")}, ExitNonzero},
		{"timed out", smolvm.ExecResult{ExitCode: 124, TimedOut: true}, ExitTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			f := newFake()
			f.exec = func(context.Context, string, []string, smolvm.ExecOptions) (smolvm.ExecResult, error) {
				return tt.res, nil
			}
			h, _ := newHandler(t, f, func(c *Config) { c.Hooks = m.Hooks() })
			if err := h.Run(context.Background(), Meta{ID: "x", MaxRetry: 3}, payload(t, basic), nil); err != nil {
				t.Fatal(err)
			}
			got := series(t, reg)
			for _, e := range exits {
				want := 0.0
				if e == tt.exit {
					want = 1
				}
				for _, name := range []string{"bottleq_agent_exits_total", "bottleq_task_agent_exits_total"} {
					if key := fmt.Sprintf("%s{exit=%q}", name, e); got[key] != want {
						t.Errorf("%s = %v, want %v", key, got[key], want)
					}
				}
			}
			for key, want := range map[string]float64{
				`bottleq_attempts_total{outcome="completed"}`: 1,
				`bottleq_tasks_total{outcome="completed"}`:    1,
				`bottleq_attempts_total{outcome="failed"}`:    0,
				`bottleq_tasks_total{outcome="failed"}`:       0,
			} {
				if got[key] != want {
					t.Errorf("%s = %v, want %v", key, got[key], want)
				}
			}
		})
	}
}

// TestMetricsAttemptsAndTasks: each attempt counts once as an attempt; a
// task counts once, on its last attempt, with that attempt's outcome; the
// agent's exit counts in every attempt that ran it to its end, and for
// the task only when it completed.
func TestMetricsAttemptsAndTasks(t *testing.T) {
	t.Parallel()
	failAt := func(phase string) func(*fakeSmolvm) {
		return func(f *fakeSmolvm) {
			injected := &smolvm.Error{Op: "machine " + phase, ExitCode: 1, Message: "injected"}
			switch phase {
			case "start":
				f.start = func(context.Context, string) error { return injected }
			case "stop":
				f.stop = func(context.Context, string) error { return injected }
			}
		}
	}
	type run struct {
		m       Meta
		payload []byte
	}
	good := func(t *testing.T) []byte { return payload(t, basic) }
	for _, tt := range []struct {
		name   string
		fault  func(*fakeSmolvm)
		runs   func(t *testing.T) []run
		series map[string]float64
	}{
		{"failed at start, retry left", failAt("start"), func(t *testing.T) []run { return []run{{Meta{ID: "a", MaxRetry: 2}, good(t)}} },
			map[string]float64{`bottleq_attempts_total{outcome="retried"}`: 1, `bottleq_attempt_failures_total{phase="start"}`: 1}},
		{"failed at start, last attempt", failAt("start"), func(t *testing.T) []run { return []run{{Meta{ID: "a", Retried: 2, MaxRetry: 2}, good(t)}} },
			map[string]float64{`bottleq_attempts_total{outcome="failed"}`: 1, `bottleq_tasks_total{outcome="failed"}`: 1, `bottleq_attempt_failures_total{phase="start"}`: 1}},
		{"failed at stop, after the agent ran", failAt("stop"), func(t *testing.T) []run {
			return []run{{Meta{ID: "a", MaxRetry: 1}, good(t)}, {Meta{ID: "a", Retried: 1, MaxRetry: 1}, good(t)}}
		}, map[string]float64{
			`bottleq_attempts_total{outcome="retried"}`: 1, `bottleq_attempts_total{outcome="failed"}`: 1, `bottleq_tasks_total{outcome="failed"}`: 1,
			`bottleq_attempt_failures_total{phase="stop"}`: 2, `bottleq_agent_exits_total{exit="zero"}`: 2,
		}},
		{"invalid payload", nil, func(t *testing.T) []run { return []run{{Meta{ID: "a", MaxRetry: 5}, []byte(`{}`)}} },
			map[string]float64{`bottleq_attempts_total{outcome="invalid"}`: 1, `bottleq_tasks_total{outcome="invalid"}`: 1}},
		{"image from a registry not allowed", nil, func(t *testing.T) []run {
			return []run{{Meta{ID: "a", MaxRetry: 5}, payload(t, tasks.AgentRun{Image: "evil.example/x:1", Command: []string{"true"}})}}
		}, map[string]float64{`bottleq_attempts_total{outcome="invalid"}`: 1, `bottleq_tasks_total{outcome="invalid"}`: 1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := prometheus.NewRegistry()
			m := NewMetrics(reg)
			f := newFake()
			if tt.fault != nil {
				tt.fault(f)
			}
			h, _ := newHandler(t, f, func(c *Config) { c.Hooks = m.Hooks() })
			for _, r := range tt.runs(t) {
				if err := h.Run(context.Background(), r.m, r.payload, nil); err == nil {
					t.Fatalf("attempt %+v succeeded", r.m)
				}
			}
			got := series(t, reg)
			for key, v := range got {
				if !strings.HasPrefix(key, "bottleq_attempts_total") && !strings.HasPrefix(key, "bottleq_tasks_total") &&
					!strings.Contains(key, "agent_exits_total") && !strings.HasPrefix(key, "bottleq_attempt_failures_total") {
					continue
				}
				if v != tt.series[key] {
					t.Errorf("%s = %v, want %v", key, v, tt.series[key])
				}
			}
		})
	}
}

// TestMetricsCancelledMidExec: an attempt whose context is cancelled (a
// shutdown) is requeued: counted as an attempt, not as a task, and the
// agent it interrupted did not exit by itself.
func TestMetricsCancelledMidExec(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f := newFake()
	ctx, cancel := context.WithCancel(context.Background())
	f.exec = func(ctx context.Context, _ string, _ []string, _ smolvm.ExecOptions) (smolvm.ExecResult, error) {
		cancel()
		<-ctx.Done()
		return smolvm.ExecResult{ExitCode: -1}, &smolvm.Error{Op: "machine exec", ExitCode: -1, Err: ctx.Err()}
	}
	h, _ := newHandler(t, f, func(c *Config) { c.Hooks = m.Hooks() })
	if err := h.Run(ctx, Meta{ID: "c", MaxRetry: 3}, payload(t, basic), nil); err == nil {
		t.Fatal("a cancelled attempt succeeded")
	}
	got := series(t, reg)
	for key, want := range map[string]float64{
		`bottleq_attempts_total{outcome="requeued"}`:   1,
		`bottleq_tasks_total{outcome="cancelled"}`:     0,
		`bottleq_tasks_total{outcome="failed"}`:        0,
		`bottleq_agent_exits_total{exit="nonzero"}`:    0,
		`bottleq_attempt_failures_total{phase="exec"}`: 0,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}

// TestMetricsThroughAsynq: under a real asynq server, a task whose
// `machine start` fails twice and then succeeds counts three attempts (two
// retried, one completed) and one completed task; a task that fails every
// attempt of its MaxRetry(1) counts two attempts and one failed task.
// asynq, not the test, tells the handler which attempt is the last.
func TestMetricsThroughAsynq(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	f := newFake()
	vmOf := func(id string) map[string]bool {
		names := map[string]bool{}
		for a := 1; a <= 5; a++ {
			names[VMName(DefaultDeployment, id, a)] = true
		}
		return names
	}
	flaky, doomed := vmOf("flaky"), vmOf("doomed")
	var flakyStarts atomic.Int32
	f.start = func(_ context.Context, name string) error {
		if doomed[name] || (flaky[name] && flakyStarts.Add(1) <= 2) {
			return &smolvm.Error{Op: "machine start", Machine: name, ExitCode: 1, Message: "injected"}
		}
		return nil
	}
	h, _ := newHandler(t, f, func(c *Config) { c.Hooks = m.Hooks() })

	r := testredis.Mini(t)
	opt := asynq.RedisClientOpt{Addr: r.Addr}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, h, ServerConfig{Redis: opt, PollInterval: 10 * time.Millisecond, RetryBase: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond})
	}()
	defer func() {
		stop()
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	client := asynq.NewClient(opt)
	defer client.Close()
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	for id, retries := range map[string]int{"flaky": 3, "doomed": 1} {
		if _, err := client.Enqueue(asynq.NewTask(tasks.TypeAgentRun, payload(t, basic)), asynq.TaskID(id), asynq.MaxRetry(retries), asynq.Retention(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for id, state := range map[string]asynq.TaskState{"flaky": asynq.TaskStateCompleted, "doomed": asynq.TaskStateArchived} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			info, err := insp.GetTaskInfo(tasks.DefaultQueue, id)
			if err == nil && info.State == state {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("task %s: %+v, %v; want it %s", id, info, err, state)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	got := series(t, reg)
	for key, want := range map[string]float64{
		`bottleq_attempts_total{outcome="retried"}`:      3, // flaky twice, doomed once
		`bottleq_attempts_total{outcome="completed"}`:    1,
		`bottleq_attempts_total{outcome="failed"}`:       1,
		`bottleq_tasks_total{outcome="completed"}`:       1,
		`bottleq_tasks_total{outcome="failed"}`:          1,
		`bottleq_attempt_failures_total{phase="start"}`:  4,
		`bottleq_agent_exits_total{exit="zero"}`:         1,
		`bottleq_task_agent_exits_total{exit="zero"}`:    1,
		`bottleq_phase_duration_seconds{phase="start"}`:  5,
		`bottleq_vms_in_flight`:                          0,
		`bottleq_attempts_total{outcome="requeued"}`:     0,
		`bottleq_task_agent_exits_total{exit="nonzero"}`: 0,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}

// TestMetricsUserCancelAndShutdown: under Serve, a task a user cancels
// mid-exec counts one cancelled attempt and one cancelled task; a task the
// worker's shutdown interrupts counts one requeued attempt and no task,
// for it runs again. Neither agent exited by itself.
func TestMetricsUserCancelAndShutdown(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	sv := serveBlocking(t, "miniredis", func(c *Config) { c.Hooks = m.Hooks() })
	check := func(when string, want map[string]float64) {
		t.Helper()
		got := series(t, reg)
		for key, v := range got {
			if strings.HasPrefix(key, "bottleq_attempts_total") || strings.HasPrefix(key, "bottleq_tasks_total") || strings.Contains(key, "agent_exits_total") {
				if v != want[key] {
					t.Errorf("%s: %s = %v, want %v", when, key, v, want[key])
				}
			}
		}
	}

	cancelled := sv.enqueue(asynq.MaxRetry(3))
	sv.waitExec()
	sv.cancelProcessing(cancelled.ID)
	sv.await(cancelled, asynq.TaskStateArchived)
	check("after a user's cancel", map[string]float64{
		`bottleq_attempts_total{outcome="cancelled"}`: 1, `bottleq_tasks_total{outcome="cancelled"}`: 1,
	})

	requeued := sv.enqueue(asynq.MaxRetry(3))
	sv.waitExec()
	sv.stop()
	if got, err := sv.insp.GetTaskInfo(requeued.Queue, requeued.ID); err != nil || got.State != asynq.TaskStatePending {
		t.Fatalf("after the shutdown the task is %+v (%v), want pending", got, err)
	}
	check("after a shutdown", map[string]float64{
		`bottleq_attempts_total{outcome="cancelled"}`: 1, `bottleq_tasks_total{outcome="cancelled"}`: 1,
		`bottleq_attempts_total{outcome="requeued"}`: 1,
	})
}
