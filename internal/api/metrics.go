package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's own Prometheus metrics, labelled by route (the
// route's pattern, "unmatched" for none) and never by tenant or run.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	streams  prometheus.Gauge
	pollers  prometheus.Gauge
	polls    prometheus.Counter
	// liveReads counts the blocking reads of live output.
	liveReads prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bottleq_api_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bottleq_api_request_duration_seconds",
			Help:    "Time to answer a request, by route (an event stream: until it ends).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 60, 600},
		}, []string{"route"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bottleq_api_event_streams",
			Help: "Event streams open now.",
		}),
		pollers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bottleq_api_event_pollers",
			Help: "Runs being polled for event streams now: one per run, whatever its number of streams.",
		}),
		polls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bottleq_api_event_polls_total",
			Help: "Reads of a run's task by the event pollers.",
		}),
		liveReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bottleq_api_event_live_reads_total",
			Help: "Reads of live output by the event streams: each waits up to 5 s for the worker to write (XREAD BLOCK).",
		}),
	}
	reg.MustRegister(m.requests, m.latency, m.streams, m.pollers, m.polls, m.liveReads)
	return m
}

func (m *metrics) observe(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}
