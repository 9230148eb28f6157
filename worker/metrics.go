package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bot-bottle/bottleq/smolvm"
	"github.com/bot-bottle/bottleq/tasks"
)

// Metrics are the worker's Prometheus metrics. Wire them with
// [Metrics.Hooks], [Metrics.ObserveSmolvm] and [Metrics.Reaped]. Every
// series of a known label value exists from the start, at 0.
//
// A task's attempts and its end are counted apart: bottleq_attempts_total
// counts every attempt by its outcome, bottleq_tasks_total each task once,
// on its last attempt. The agent's exit is counted apart from both:
// bottleq_agent_exits_total for every run of the agent's command to its
// end, bottleq_task_agent_exits_total for each completed task.
type Metrics struct {
	phase         *prometheus.HistogramVec
	attempts      *prometheus.CounterVec
	tasks         *prometheus.CounterVec
	agentExits    *prometheus.CounterVec
	taskExits     *prometheus.CounterVec
	failures      *prometheus.CounterVec
	vms           prometheus.Gauge
	packCache     *prometheus.CounterVec
	reaped        prometheus.Counter
	deleteFailed  prometheus.Counter
	smolvmCalls   *prometheus.CounterVec
	smolvmSeconds *prometheus.HistogramVec
}

// phases are the pipeline's phases, and failPhases those an attempt can
// fail in (a failed delete leaves the VM to the reaper).
var (
	phases     = []string{tasks.PhasePack, tasks.PhaseCreate, tasks.PhaseStart, tasks.PhaseReady, tasks.PhaseFiles, tasks.PhaseExec, tasks.PhaseArtifacts, tasks.PhaseStop, tasks.PhaseCommit, tasks.PhaseDelete}
	failPhases = phases[:len(phases)-1]
)

// smolvmOps are the subcommands *smolvm.Client runs, as smolvm.Call.Op
// names them.
var smolvmOps = []string{"--version", "pack create", "machine create", "machine start", "machine stop", "machine delete", "machine cp", "machine exec", "machine ls", "machine status"}

// NewMetrics creates the metrics, with every known series at 0, and
// registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	m := &Metrics{
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bottleq_phase_duration_seconds", Help: "Duration of each pipeline phase (pack, create, start, ready, files, exec, artifacts, stop, commit, delete; files and artifacts only for tasks that have them).", Buckets: buckets,
		}, []string{"phase"}),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_attempts_total", Help: "Task attempts by outcome: completed (the agent ran; see bottleq_agent_exits_total), retried (smolvm failed; asynq retries), failed (smolvm failed on the last attempt; archived), invalid (archived without retry), cancelled (by a user), requeued (by the worker's shutdown).",
		}, []string{"outcome"}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_tasks_total", Help: "Tasks by final outcome, counted once, on their last attempt: completed (the agent ran; see bottleq_task_agent_exits_total), failed (retries exhausted), invalid, cancelled.",
		}, []string{"outcome"}),
		agentExits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_agent_exits_total", Help: "Runs of the agent's command to its end, in any attempt, by exit: zero, nonzero, timeout (its timeout killed it).",
		}, []string{"exit"}),
		taskExits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_task_agent_exits_total", Help: "Completed tasks by their agent's exit in the last attempt: zero, nonzero, timeout.",
		}, []string{"exit"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_attempt_failures_total", Help: "Attempts that smolvm failed (outcome retried or failed), by the phase that failed.",
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
	for _, p := range phases {
		m.phase.WithLabelValues(p)
	}
	for _, o := range outcomes {
		m.attempts.WithLabelValues(o)
	}
	for _, o := range taskOutcomes {
		m.tasks.WithLabelValues(o)
	}
	for _, e := range exits {
		m.agentExits.WithLabelValues(e)
		m.taskExits.WithLabelValues(e)
	}
	for _, p := range failPhases {
		m.failures.WithLabelValues(p)
	}
	m.packCache.WithLabelValues("hit")
	m.packCache.WithLabelValues("miss")
	for _, op := range smolvmOps {
		m.smolvmCalls.WithLabelValues(op, "ok")
		m.smolvmCalls.WithLabelValues(op, "error")
		m.smolvmSeconds.WithLabelValues(op)
	}
	reg.MustRegister(m.phase, m.attempts, m.tasks, m.agentExits, m.taskExits, m.failures, m.vms, m.packCache, m.reaped, m.deleteFailed, m.smolvmCalls, m.smolvmSeconds)
	return m
}

// Hooks returns handler hooks that feed the metrics.
func (m *Metrics) Hooks() Hooks {
	return Hooks{
		Phase:   func(phase string, d time.Duration, _ error) { m.phase.WithLabelValues(phase).Observe(d.Seconds()) },
		Attempt: m.attempt,
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

// attempt counts how an attempt ended: once as an attempt, and on the
// task's last attempt once as a task.
func (m *Metrics) attempt(a Attempt) {
	m.attempts.WithLabelValues(a.Outcome).Inc()
	if a.Outcome == OutcomeRetried || a.Outcome == OutcomeFailed {
		m.failures.WithLabelValues(a.Phase).Inc()
	}
	if a.Exit != "" {
		m.agentExits.WithLabelValues(a.Exit).Inc()
	}
	if !a.Final {
		return
	}
	m.tasks.WithLabelValues(a.Outcome).Inc()
	if a.Outcome == OutcomeCompleted {
		m.taskExits.WithLabelValues(a.Exit).Inc()
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
