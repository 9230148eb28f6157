package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// WarmMetrics are the warm pool's Prometheus metrics, labelled by image
// (only images the pool keeps, so a bounded set). Wire them with
// [WarmMetrics.Hooks] into [WarmConfig].Hooks.
type WarmMetrics struct {
	size   *prometheus.GaugeVec
	target *prometheus.GaugeVec
	claims *prometheus.CounterVec
	refill *prometheus.HistogramVec
	age    *prometheus.HistogramVec
}

// NewWarmMetrics creates the warm pool's metrics and registers them with
// reg, which may be the registry of [NewMetrics].
func NewWarmMetrics(reg prometheus.Registerer) *WarmMetrics {
	m := &WarmMetrics{
		size: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bottleq_warm_pool_vms", Help: "Started, exec-ready VMs waiting in the warm pool, by image.",
		}, []string{"image"}),
		target: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bottleq_warm_pool_target", Help: "VMs the warm pool keeps of each image (-warm).",
		}, []string{"image"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_warm_claims_total", Help: "Tasks the warm pool could serve, by image and result: hit (took a warm VM) or miss (none ready: cold start).",
		}, []string{"image", "result"}),
		refill: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bottleq_warm_refill_duration_seconds", Help: "Time to make one pool VM (pack lookup, create, start, ready), by image and result (ok or error; a failed one is deleted and tried again with backoff).",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"image", "result"}),
		age: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bottleq_warm_vm_age_at_claim_seconds", Help: "How long a warm VM had been ready when a task claimed it, by image.",
			Buckets: []float64{.1, .5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600},
		}, []string{"image"}),
	}
	reg.MustRegister(m.size, m.target, m.claims, m.refill, m.age)
	return m
}

// Hooks returns warm pool hooks that feed the metrics.
func (m *WarmMetrics) Hooks() WarmHooks {
	return WarmHooks{
		Target: func(image string, n int) { m.target.WithLabelValues(image).Set(float64(n)) },
		Size:   func(image string, n int) { m.size.WithLabelValues(image).Set(float64(n)) },
		Claim: func(image string, hit bool, age time.Duration) {
			if !hit {
				m.claims.WithLabelValues(image, "miss").Inc()
				return
			}
			m.claims.WithLabelValues(image, "hit").Inc()
			m.age.WithLabelValues(image).Observe(age.Seconds())
		},
		Refill: func(image string, d time.Duration, err error) {
			result := "ok"
			if err != nil {
				result = "error"
			}
			m.refill.WithLabelValues(image, result).Observe(d.Seconds())
		},
	}
}
