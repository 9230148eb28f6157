package main

import (
	"strings"
	"testing"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

// TestSentinel: on a redis-sentinel:// URL the dashboard finds the master
// through the sentinels and shows its task and queue metrics, through its
// one Redis client.
func TestSentinel(t *testing.T) {
	t.Parallel()
	s := testredis.Sentinel(t, testredis.SentinelConfig{Sentinels: 2})
	id := completedTask(t, s.URL())
	base, _ := startDashboard(t, s.URL())
	if code, _, body := get(t, base+"/api/queues/default/tasks/"+id); code != 200 || !strings.Contains(body, `"state":"completed"`) {
		t.Errorf("GET task %s: %d %s", id, code, body)
	}
	code, _, body := get(t, base+"/metrics")
	if want := `asynq_tasks_enqueued_total{queue="default",state="completed"} 1`; code != 200 || !strings.Contains(body, want) {
		t.Errorf("GET /metrics: %d, want %q in:\n%s", code, want, body)
	}
}
