package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bot-bottle/bottleq/smolvm"
)

// Metrics are the worker's Prometheus metrics. Wire them with
// [Metrics.Hooks], [Metrics.ObserveSmolvm] and [Metrics.Reaped].
type Metrics struct {
	phase         *prometheus.HistogramVec
	tasks         *prometheus.CounterVec
	retries       *prometheus.CounterVec
	vms           prometheus.Gauge
	packCache     *prometheus.CounterVec
	reaped        prometheus.Counter
	deleteFailed  prometheus.Counter
	smolvmCalls   *prometheus.CounterVec
	smolvmSeconds *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	m := &Metrics{
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bottleq_phase_duration_seconds", Help: "Duration of each pipeline phase (pack, create, start, ready, files, exec, artifacts, stop, commit, delete; files and artifacts only for tasks that have them).", Buckets: buckets,
		}, []string{"phase"}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_tasks_total", Help: "Task attempts by outcome: completed, failed (retried by asynq), invalid (archived without retry), cancelled.",
		}, []string{"outcome"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_task_failures_total", Help: "Failed attempts that asynq retries, by the phase that failed.",
		}, []string{"phase"}),
		vms: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bottleq_vms_in_flight", Help: "VMs this worker has created and not yet deleted.",
		}),
		packCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_pack_cache_total", Help: "Image pack lookups by result: hit or miss.",
		}, []string{"result"}),
		reaped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bottleq_reaped_vms_total", Help: "Orphan VMs (left by crashed workers) deleted by the reaper.",
		}),
		deleteFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bottleq_vm_delete_failures_total", Help: "VMs whose delete still failed after retries; the reaper deletes them later.",
		}),
		smolvmCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_smolvm_calls_total", Help: "smolvm invocations by subcommand and result (ok or error).",
		}, []string{"op", "result"}),
		smolvmSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bottleq_smolvm_call_duration_seconds", Help: "Duration of smolvm invocations by subcommand.", Buckets: buckets,
		}, []string{"op"}),
	}
	reg.MustRegister(m.phase, m.tasks, m.retries, m.vms, m.packCache, m.reaped, m.deleteFailed, m.smolvmCalls, m.smolvmSeconds)
	return m
}

// Hooks returns handler hooks that feed the metrics.
func (m *Metrics) Hooks() Hooks {
	return Hooks{
		Phase: func(phase string, d time.Duration, _ error) { m.phase.WithLabelValues(phase).Observe(d.Seconds()) },
		Outcome: func(outcome, phase string) {
			m.tasks.WithLabelValues(outcome).Inc()
			if outcome == OutcomeFailed {
				m.retries.WithLabelValues(phase).Inc()
			}
		},
		PackCache: func(hit bool) {
			if hit {
				m.packCache.WithLabelValues("hit").Inc()
			} else {
				m.packCache.WithLabelValues("miss").Inc()
			}
		},
		VMs:          func(delta int) { m.vms.Add(float64(delta)) },
		DeleteFailed: func(string) { m.deleteFailed.Inc() },
	}
}

// ObserveSmolvm is a smolvm.Config.Observe that counts and times calls.
func (m *Metrics) ObserveSmolvm(c smolvm.Call) {
	result := "ok"
	if c.Err != nil {
		result = "error"
	}
	m.smolvmCalls.WithLabelValues(c.Op, result).Inc()
	m.smolvmSeconds.WithLabelValues(c.Op).Observe(c.Duration.Seconds())
}

// Reaped is a Reaper.Reaped that counts reaped VMs.
func (m *Metrics) Reaped(string) { m.reaped.Inc() }
