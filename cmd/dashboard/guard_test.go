package main

import (
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/internal/testredis"
)

// oneLine fails the test unless body is one line starting "dashboard: "
// and containing want.
func oneLine(t *testing.T, what, body, want string) {
	t.Helper()
	if strings.Count(body, "\n") != 1 || !strings.HasPrefix(body, "dashboard: ") || !strings.Contains(body, want) {
		t.Errorf("%s: body %q, want one line \"dashboard: ...\" containing %q", what, body, want)
	}
}

// TestForeignHostRefused is DNS rebinding: a page on a name the attacker
// controls, re-pointed at the dashboard's address, reads it through the
// victim's browser, which sends that name as Host.
func TestForeignHostRefused(t *testing.T) {
	redis := testredis.Mini(t)
	id := completedTask(t, redis.URL())
	base, _ := startDashboard(t, redis.URL())
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))

	paths := []string{"/api/queues/default/tasks/" + id, "/api/queues/default/completed_tasks", "/queues/default/tasks/" + id, "/metrics"}
	for _, path := range paths {
		if code, _, body := get(t, base+path); code != 200 {
			t.Fatalf("GET %s with the listen address as Host: %d %s", path, code, body)
		}
	}
	for _, host := range []string{
		"rebind.example:" + port,
		"rebind.example",
		"127.0.0.1.rebind.example:" + port,
		"localhost.rebind.example:" + port,
		"10.0.0.1:" + port, // an address, but not the listen address
	} {
		for _, path := range paths {
			t.Run(host+path, func(t *testing.T) {
				code, _, body := send(t, request{method: "GET", url: base + path, host: host})
				if code != 421 {
					t.Errorf("GET %s with Host %s: %d, want 421", path, host, code)
				}
				oneLine(t, "refusal", body, "-allowed-hosts")
				for _, leak := range []string{"exit code", "agent:run", testSecret, "asynq_"} {
					if strings.Contains(body, leak) {
						t.Errorf("refusal shows %q: %s", leak, body)
					}
				}
			})
		}
	}
}

func TestAllowedHosts(t *testing.T) {
	redis := testredis.Mini(t)
	id := completedTask(t, redis.URL())
	env := map[string]string{"BOTTLEQ_DASHBOARD_HOSTS": "env.example"}
	getenv := func(k string) string { return env[k] }
	flagged, _ := startDashboard(t, redis.URL(), "-allowed-hosts", "dash.example.com, 10.1.2.3", "-allowed-hosts", "[fd00::7]:8443")
	fromEnv, _ := startDashboardEnv(t, getenv, redis.URL())
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(flagged, "http://"))

	for _, tt := range []struct {
		name, base, host string
		want             int
	}{
		{"listed name", flagged, "dash.example.com", 200},
		{"listed name, any case and port, trailing dot", flagged, "DASH.Example.COM.:443", 200},
		{"listed address", flagged, "10.1.2.3:" + port, 200},
		{"listed IPv6 address", flagged, "[fd00::7]", 200},
		{"localhost on a loopback listen", flagged, "localhost:" + port, 200},
		{"::1 on a loopback listen", flagged, "[::1]:" + port, 200},
		{"subdomain of a listed name", flagged, "x.dash.example.com", 421},
		{"name from the env, not given: flag beats env", flagged, "env.example", 421},
		{"name from the env", fromEnv, "env.example:" + port, 200},
		{"name not listed in the env", fromEnv, "dash.example.com", 421},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, body := send(t, request{method: "GET", url: tt.base + "/api/queues/default/tasks/" + id, host: tt.host})
			if code != tt.want {
				t.Errorf("GET task with Host %s: %d %s, want %d", tt.host, code, body, tt.want)
			}
			if tt.want == 200 && !strings.Contains(body, "exit code 3") {
				t.Errorf("GET task with Host %s: no result in %s", tt.host, body)
			}
		})
	}
}

func TestHostPolicy(t *testing.T) {
	t.Parallel()
	loopback := []string{"localhost", "127.0.0.1", "::1"}
	for _, tt := range []struct {
		listen string
		extra  []string
		want   []string
	}{
		{"127.0.0.1:8080", nil, loopback},
		{"localhost:8080", nil, loopback},
		{"[::1]:8080", nil, loopback},
		{"127.0.0.2:8080", nil, append([]string{"127.0.0.2"}, loopback...)},
		{"0.0.0.0:8080", nil, loopback},
		{"[::]:8080", nil, loopback},
		{":8080", []string{"dash.example.com"}, append([]string{"dash.example.com"}, loopback...)},
		{"10.0.0.5:8080", nil, []string{"10.0.0.5"}},
		{"Dash.Internal:8080", []string{"dash.example.com"}, []string{"dash.internal", "dash.example.com"}},
	} {
		t.Run(tt.listen, func(t *testing.T) {
			t.Parallel()
			got := slices.Sorted(maps.Keys(newHostPolicy(tt.listen, tt.extra)))
			if want := slices.Sorted(slices.Values(tt.want)); !slices.Equal(got, want) {
				t.Errorf("newHostPolicy(%q, %q) allows %q, want %q", tt.listen, tt.extra, got, want)
			}
		})
	}
}

// TestDefaultsAreLoopbackAndReadOnly: with no flags and no environment the
// dashboard listens on loopback only, answers only to loopback names, and
// changes nothing.
func TestDefaultsAreLoopbackAndReadOnly(t *testing.T) {
	t.Parallel()
	c, err := parseFlags(nil, noEnv, &syncBuffer{})
	if err != nil {
		t.Fatal(err)
	}
	host, _, err := net.SplitHostPort(c.addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		t.Errorf("default -addr %q does not listen on a loopback address", c.addr)
	}
	if c.writable {
		t.Error("writable by default")
	}
	if got := slices.Sorted(maps.Keys(newHostPolicy(c.addr, c.allowedHosts))); !slices.Equal(got, []string{"127.0.0.1", "::1", "localhost"}) {
		t.Errorf("default allowed hosts %q, want the loopback names only", got)
	}
}

// TestCrossOriginWritesRefused sends, to a -writable dashboard, the writes
// a page on another origin can make a browser send without asking first
// (text/plain, forms, no body) and the marks a browser puts on them, and
// expects each refused with the tasks untouched.
func TestCrossOriginWritesRefused(t *testing.T) {
	redis := testredis.Mini(t)
	archived := archivedTask(t, redis.URL())
	scheduled := scheduledTask(t, redis.URL())
	insp := inspector(t, redis.URL())
	base, _ := startDashboard(t, redis.URL(), "-writable")
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(base, "http://"))
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	// Same site (the host), another origin (the port).
	otherPort := "http://127.0.0.1:" + strconv.Itoa(n%60000+1)
	api := base + "/api/queues/default"
	posts := []struct{ path, body string }{
		{"/archived_tasks/" + archived + ":run", ""},
		{"/archived_tasks:run_all", ""},
		{"/archived_tasks:batch_run", `{"task_ids":["` + archived + `"]}`},
		{"/scheduled_tasks/" + scheduled + ":archive", ""},
		{"/scheduled_tasks/" + scheduled + ":run", ""},
		{"/scheduled_tasks:archive_all", ""},
		{"/scheduled_tasks:batch_archive", `{"task_ids":["` + scheduled + `"]}`},
	}
	for _, tt := range []struct {
		name   string
		header map[string]string
		body   bool // send the endpoint's body (else none)
		want   int
		reason string
	}{
		{"text/plain from another site", map[string]string{"Origin": "http://evil.example", "Content-Type": "text/plain;charset=UTF-8"}, true, 403, "Origin"},
		{"text/plain from another port", map[string]string{"Origin": otherPort, "Content-Type": "text/plain"}, true, 403, "Origin"},
		{"text/plain from an opaque origin", map[string]string{"Origin": "null", "Content-Type": "text/plain"}, true, 403, "Origin"},
		{"no body from another site", map[string]string{"Origin": "http://evil.example"}, false, 403, "Origin"},
		{"form from another site", map[string]string{"Origin": "http://evil.example", "Content-Type": "application/x-www-form-urlencoded"}, true, 403, "Origin"},
		{"JSON from another site", map[string]string{"Origin": "http://evil.example", "Content-Type": "application/json"}, true, 403, "Origin"},
		{"no Origin, cross-site fetch", map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "text/plain"}, true, 403, "Sec-Fetch-Site"},
		{"no Origin, same-site fetch", map[string]string{"Sec-Fetch-Site": "same-site"}, false, 403, "Sec-Fetch-Site"},
		{"no Origin, foreign Referer", map[string]string{"Referer": "http://evil.example/page", "Content-Type": "text/plain"}, true, 403, "Referer"},
		{"text/plain from this dashboard", map[string]string{"Origin": base, "Content-Type": "text/plain"}, true, 415, "text/plain"},
		{"multipart from this dashboard", map[string]string{"Origin": base, "Content-Type": "multipart/form-data; boundary=x"}, true, 415, "multipart/form-data"},
		{"text/plain from no browser", map[string]string{"Content-Type": "text/plain"}, true, 415, "text/plain"},
		{"body without Content-Type", nil, true, 415, "application/json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, p := range posts {
				r := request{method: "POST", url: api + p.path, header: tt.header}
				if tt.body || p.body == "" {
					r.body = p.body
				}
				if tt.body && r.body == "" {
					r.body = "x" // a simple request carries something
				}
				code, _, body := send(t, r)
				if code != tt.want {
					t.Errorf("POST %s: %d %q, want %d", p.path, code, body, tt.want)
				}
				oneLine(t, "POST "+p.path, body, tt.reason)
			}
			r := request{method: "DELETE", url: api + "/archived_tasks/" + archived, header: tt.header}
			if tt.body {
				r.body = "x"
			}
			if code, _, body := send(t, r); code != tt.want {
				t.Errorf("DELETE archived task: %d %q, want %d", code, body, tt.want)
			}
			if got := taskState(t, insp, archived); got != asynq.TaskStateArchived {
				t.Errorf("archived task is now %v", got)
			}
			if got := taskState(t, insp, scheduled); got != asynq.TaskStateScheduled {
				t.Errorf("scheduled task is now %v", got)
			}
		})
	}
}

// TestWritable: the UI's own writes (same origin, JSON or no body) change
// tasks with -writable or its variable, and are refused without.
func TestWritable(t *testing.T) {
	for _, tt := range []struct {
		name     string
		args     []string
		env      map[string]string
		writable bool
	}{
		{"default is read-only", nil, nil, false},
		{"-writable", []string{"-writable"}, nil, true},
		{"env", nil, map[string]string{"BOTTLEQ_DASHBOARD_WRITABLE": "true"}, true},
		{"-writable=false beats env", []string{"-writable=false"}, map[string]string{"BOTTLEQ_DASHBOARD_WRITABLE": "true"}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			redis := testredis.Mini(t)
			archived := archivedTask(t, redis.URL())
			scheduled := scheduledTask(t, redis.URL())
			completed := completedTask(t, redis.URL())
			insp := inspector(t, redis.URL())
			base, _ := startDashboardEnv(t, func(k string) string { return tt.env[k] }, redis.URL(), tt.args...)
			api := base + "/api/queues/default"

			_, _, page := get(t, base+"/")
			if want := `window.FLAG_READ_ONLY="` + map[bool]string{true: "false", false: "true"}[tt.writable] + `"`; !strings.Contains(page, want) {
				t.Errorf("UI page lacks %s", want)
			}
			for _, w := range []struct {
				name    string
				r       request
				okCode  int
				id      string
				before  asynq.TaskState
				after   asynq.TaskState
				deleted bool
			}{
				{
					// What asynqmon's UI sends for one task: no body, no Content-Type.
					"UI run of an archived task",
					request{method: "POST", url: api + "/archived_tasks/" + archived + ":run",
						header: map[string]string{"Origin": base, "Sec-Fetch-Site": "same-origin"}},
					204, archived, asynq.TaskStateArchived, asynq.TaskStatePending, false,
				},
				{
					"UI batch archive, JSON",
					request{method: "POST", url: api + "/scheduled_tasks:batch_archive", body: `{"task_ids":["` + scheduled + `"]}`,
						header: map[string]string{"Origin": base, "Content-Type": "application/json;charset=utf-8"}},
					200, scheduled, asynq.TaskStateScheduled, asynq.TaskStateArchived, false,
				},
				{
					"curl delete, no browser headers",
					request{method: "DELETE", url: api + "/completed_tasks/" + completed},
					204, completed, asynq.TaskStateCompleted, 0, true,
				},
			} {
				want := 405
				if tt.writable {
					want = w.okCode
				}
				code, _, body := send(t, w.r)
				if code != want {
					t.Errorf("%s: %d %q, want %d", w.name, code, body, want)
				}
				if !tt.writable {
					oneLine(t, w.name, body, "-writable")
				}
				info, err := insp.GetTaskInfo("default", w.id)
				switch {
				case !tt.writable && (err != nil || info.State != w.before):
					t.Errorf("%s, refused: task %v, %v; want it still %v", w.name, info, err, w.before)
				case tt.writable && w.deleted && err == nil:
					t.Errorf("%s: task still %v, want it deleted", w.name, info.State)
				case tt.writable && !w.deleted && (err != nil || info.State != w.after):
					t.Errorf("%s: task %v, %v; want it %v", w.name, info, err, w.after)
				}
			}
		})
	}
}
