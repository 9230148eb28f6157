package tasks_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// secret is the env value of every case that carries env: no error may
// quote it.
const secret = "s3cr3t-VALUE-42"

func TestDecodeValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		json string
		want tasks.AgentRun
	}{
		{
			name: "minimal image",
			json: `{"image":"alpine:3.20","command":["true"]}`,
			want: tasks.AgentRun{Image: "alpine:3.20", Command: []string{"true"}},
		},
		{
			name: "every field",
			json: `{"version":1,"image":"ghcr.io/x/agent@sha256:abc","command":["agent","--task","fix it"],` +
				`"env":{"API_KEY":"` + secret + `","_X1":""},"workdir":"/src","timeout":"90s","commit":false}`,
			want: tasks.AgentRun{
				Version: 1, Image: "ghcr.io/x/agent@sha256:abc", Command: []string{"agent", "--task", "fix it"},
				Env: map[string]string{"API_KEY": secret, "_X1": ""}, Workdir: "/src",
				Timeout: tasks.Duration(90 * time.Second), Commit: tasks.Bool(false),
			},
		},
		{
			name: "from a path",
			json: `{"from":"/srv/packs/base.smolmachine","command":["true"],"timeout":90}`,
			want: tasks.AgentRun{From: "/srv/packs/base.smolmachine", Command: []string{"true"}, Timeout: tasks.Duration(90 * time.Second)},
		},
		{
			name: "from a task",
			json: `{"from":"task:3f2a","command":["true"],"timeout":1.5}`,
			want: tasks.AgentRun{From: "task:3f2a", Command: []string{"true"}, Timeout: tasks.Duration(1500 * time.Millisecond)},
		},
		{
			name: "maximum timeout",
			json: `{"image":"alpine","command":["true"],"timeout":"24h"}`,
			want: tasks.AgentRun{Image: "alpine", Command: []string{"true"}, Timeout: tasks.Duration(tasks.MaxTimeout)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tasks.Decode([]byte(tt.json))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Decode =\n%#v\nwant\n%#v", got, tt.want)
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	t.Parallel()
	const ok = `"image":"alpine","command":["true"]`
	tests := []struct {
		name      string
		json      string
		wantField string
	}{
		{"empty command", `{"image":"alpine","command":[]}`, "command"},
		{"no command", `{"image":"alpine"}`, "command"},
		{"empty program", `{"image":"alpine","command":["","x"]}`, "command"},
		{"unknown field", `{` + ok + `,"shell":true}`, "payload"},
		{"NUL in command", `{"image":"alpine","command":["echo","a\u0000b"]}`, "command[1]"},
		{"NUL in env value", `{` + ok + `,"env":{"K":"` + secret + `\u0000"}}`, "env"},
		{"NUL in workdir", `{` + ok + `,"workdir":"/src\u0000"}`, "workdir"},
		{"relative workdir", `{` + ok + `,"workdir":"src"}`, "workdir"},
		{"env key with =", `{` + ok + `,"env":{"A=B":"` + secret + `"}}`, "env"},
		{"env key starting with a digit", `{` + ok + `,"env":{"1A":"` + secret + `"}}`, "env"},
		{"empty env key", `{` + ok + `,"env":{"":"` + secret + `"}}`, "env"},
		{"env value not a string", `{` + ok + `,"env":{"K":["` + secret + `"]}}`, "payload"},
		{"env value not JSON", `{` + ok + `,"env":{"K":` + secret + `}}`, "payload"},
		{"bad escape in env value", `{` + ok + `,"env":{"K":"` + secret + `\q"}}`, "payload"},
		{"empty allow_hosts entry", `{` + ok + `,"allow_hosts":["a.com",""]}`, "allow_hosts[1]"},
		{"allow_hosts entry a URL", `{` + ok + `,"allow_hosts":["https://a.com"]}`, "allow_hosts[0]"},
		{"allow_hosts wildcard of a TLD", `{` + ok + `,"allow_hosts":["a.com","b.com:443","*.com"]}`, "allow_hosts[2]"},
		{"image starting with -", `{"image":"--privileged","command":["true"]}`, "image"},
		{"image with a space", `{"image":"alpine latest","command":["true"]}`, "image"},
		{"image and from", `{"image":"alpine","from":"task:x","command":["true"]}`, "from"},
		{"neither image nor from", `{"command":["true"]}`, "image"},
		{"relative from", `{"from":"packs/base.smolmachine","command":["true"]}`, "from"},
		{"unclean from", `{"from":"/srv/../etc/base.smolmachine","command":["true"]}`, "from"},
		{"from not a .smolmachine", `{"from":"/srv/base.tar","command":["true"]}`, "from"},
		{"from task without ID", `{"from":"task:","command":["true"]}`, "from"},
		{"negative timeout string", `{` + ok + `,"timeout":"-5s"}`, "timeout"},
		{"timeout over 24h", `{` + ok + `,"timeout":"24h0m1s"}`, "timeout"},
		{"timeout over 24h in seconds", `{` + ok + `,"timeout":90000}`, "timeout"},
		{"sub-millisecond timeout", `{` + ok + `,"timeout":"500us"}`, "timeout"},
		{"negative timeout number", `{` + ok + `,"timeout":-5}`, "timeout"},
		{"absurd timeout number", `{` + ok + `,"timeout":1e300}`, "timeout"},
		{"timeout not a duration", `{` + ok + `,"timeout":"abc"}`, "timeout"},
		{"timeout a bool", `{` + ok + `,"timeout":true}`, "timeout"},
		{"command not a list", `{"image":"alpine","command":"true"}`, "payload"},
		{"version 2", `{"version":2,` + ok + `}`, "version"},
		{"negative version", `{"version":-1,` + ok + `}`, "version"},
		{"not JSON", `image=alpine`, "payload"},
		{"empty", ``, "payload"},
		{"JSON null", `null`, "image"},
		{"a JSON list", `[]`, "payload"},
		{"truncated", `{` + ok + `,"env":{"K":"` + secret + `"`, "payload"},
		{"trailing data", `{` + ok + `} x`, "payload"},
		{"two objects", `{` + ok + `}{` + ok + `}`, "payload"},
		{"oversize field", `{"image":"alpine","command":["` + strings.Repeat("a", 65<<10) + `"]}`, "command[0]"},
		{"oversize payload", `{"image":"alpine","command":["` + strings.Repeat("a", 300<<10) + `"]}`, "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tasks.Decode([]byte(tt.json))

			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Decode error = %v (%T), want a *tasks.ValidationError", err, err)
			}
			if ve.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (error %q)", ve.Field, tt.wantField, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.wantField+": ") {
				t.Errorf("error %q does not start with %q", msg, tt.wantField+": ")
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("error %q spans lines", msg)
			}
			if strings.Contains(msg, secret) {
				t.Errorf("error %q quotes an env value", msg)
			}
			if !reflect.DeepEqual(got, tasks.AgentRun{}) {
				t.Errorf("Decode returned a payload with its error: %#v", got)
			}
		})
	}
}

// TestAllowHosts: allow_hosts entries follow the egress proxy's grammar;
// the first bad one is named by index, with the reason after its quote.
func TestAllowHosts(t *testing.T) {
	t.Parallel()
	ok := tasks.AgentRun{Image: "alpine", Command: []string{"true"},
		AllowHosts: []string{"api.example.com", "*.example.org:443", "[2001:db8::1]:8443", "10.0.0.1"}}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(%q) = %v, want nil", ok.AllowHosts, err)
	}
	bad := ok
	bad.AllowHosts = []string{"a.com", "a..b", ""}
	err := bad.Validate()
	var ve *tasks.ValidationError
	if !errors.As(err, &ve) || ve.Field != "allow_hosts[1]" || ve.Reason != `"a..b" has an empty label (.. or a leading or trailing dot)` {
		t.Errorf("Validate(%q) = %#v, want allow_hosts[1]: \"a..b\" has an empty label …", bad.AllowHosts, err)
	}
}

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want time.Duration
		out  string
	}{
		{in: `"90s"`, want: 90 * time.Second, out: `"1m30s"`},
		{in: `90`, want: 90 * time.Second, out: `"1m30s"`},
		{in: `1.5`, want: 1500 * time.Millisecond, out: `"1.5s"`},
		{in: `"1h30m"`, want: 90 * time.Minute, out: `"1h30m0s"`},
		{in: `0`, want: 0, out: `"0s"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			var d tasks.Duration
			if err := json.Unmarshal([]byte(tt.in), &d); err != nil {
				t.Fatalf("Unmarshal(%s): %v", tt.in, err)
			}
			if time.Duration(d) != tt.want {
				t.Errorf("Unmarshal(%s) = %s, want %s", tt.in, time.Duration(d), tt.want)
			}
			out, err := json.Marshal(d)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			if string(out) != tt.out {
				t.Errorf("Marshal = %s, want %s", out, tt.out)
			}
			var back tasks.Duration
			if err := json.Unmarshal(out, &back); err != nil || back != d {
				t.Errorf("round trip of %s = %s, %v; want %s", out, time.Duration(back), err, time.Duration(d))
			}
		})
	}
}

// enqueued puts task into a fresh in-process Redis and reads it back as
// asynq stored it.
func enqueued(t *testing.T, task *asynq.Task) *asynq.TaskInfo {
	t.Helper()
	r := asynq.RedisClientOpt{Addr: miniredis.RunT(t).Addr()} // on 127.0.0.1
	c := asynq.NewClient(r)
	t.Cleanup(func() { _ = c.Close() })
	i := asynq.NewInspector(r)
	t.Cleanup(func() { _ = i.Close() })

	info, err := c.Enqueue(task)
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	stored, err := i.GetTaskInfo(info.Queue, info.ID)
	if err != nil {
		t.Fatalf("GetTaskInfo: %v", err)
	}
	return stored
}

func TestNewAgentRun(t *testing.T) {
	t.Parallel()
	base := tasks.AgentRun{
		Image:   "alpine:3.20",
		Command: []string{"sh", "-c", "echo $API_KEY >/dev/null"},
		Env:     map[string]string{"API_KEY": secret},
		Workdir: "/src",
		Commit:  tasks.Bool(false),
	}
	with := func(d time.Duration) tasks.AgentRun { p := base; p.Timeout = tasks.Duration(d); return p }
	tests := []struct {
		name          string
		p             tasks.AgentRun
		opts          []asynq.Option
		wantQueue     string
		wantMaxRetry  int
		wantTimeout   time.Duration
		wantRetention time.Duration
	}{
		{
			name: "defaults", p: base,
			wantQueue: tasks.DefaultQueue, wantMaxRetry: tasks.DefaultMaxRetry,
			wantTimeout: tasks.DefaultTimeout + tasks.PipelineOverhead, wantRetention: tasks.DefaultRetention,
		},
		{
			name: "the command's timeout plus the pipeline", p: with(90 * time.Second),
			wantQueue: tasks.DefaultQueue, wantMaxRetry: tasks.DefaultMaxRetry,
			wantTimeout: 90*time.Second + tasks.PipelineOverhead, wantRetention: tasks.DefaultRetention,
		},
		{
			name: "options override", p: with(90 * time.Second),
			opts:      []asynq.Option{asynq.Queue("agents"), asynq.MaxRetry(0), asynq.Timeout(3 * time.Hour), asynq.Retention(time.Hour)},
			wantQueue: "agents", wantMaxRetry: 0, wantTimeout: 3 * time.Hour, wantRetention: time.Hour,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tasks.NewAgentRun(tt.p, tt.opts...)
			if err != nil {
				t.Fatalf("NewAgentRun: %v", err)
			}
			if task.Type() != tasks.TypeAgentRun {
				t.Errorf("Type = %q, want %q", task.Type(), tasks.TypeAgentRun)
			}
			got, err := tasks.Decode(task.Payload())
			if err != nil {
				t.Fatalf("Decode(payload): %v", err)
			}
			want := tt.p
			want.Version = tasks.PayloadVersion
			if !reflect.DeepEqual(got, want) {
				t.Errorf("payload decodes to\n%#v\nwant\n%#v", got, want)
			}

			info := enqueued(t, task)
			if info.Type != tasks.TypeAgentRun || info.Queue != tt.wantQueue || info.MaxRetry != tt.wantMaxRetry ||
				info.Timeout != tt.wantTimeout || info.Retention != tt.wantRetention {
				t.Errorf("stored task = type %s queue %s max retry %d timeout %s retention %s, want %s %s %d %s %s",
					info.Type, info.Queue, info.MaxRetry, info.Timeout, info.Retention,
					tasks.TypeAgentRun, tt.wantQueue, tt.wantMaxRetry, tt.wantTimeout, tt.wantRetention)
			}
		})
	}
}

func TestNewAgentRunInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		p         tasks.AgentRun
		wantField string
	}{
		{"empty", tasks.AgentRun{}, "image"},
		{"no command", tasks.AgentRun{Image: "alpine"}, "command"},
		{"bad env key", tasks.AgentRun{Image: "alpine", Command: []string{"true"}, Env: map[string]string{"A-B": secret}}, "env"},
		{"timeout too long", tasks.AgentRun{Image: "alpine", Command: []string{"true"}, Timeout: tasks.Duration(25 * time.Hour)}, "timeout"},
		{"future version", tasks.AgentRun{Version: 2, Image: "alpine", Command: []string{"true"}}, "version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tasks.NewAgentRun(tt.p)
			if task != nil {
				t.Errorf("NewAgentRun returned a task with an invalid payload")
			}
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.wantField {
				t.Fatalf("error = %v, want a *tasks.ValidationError for %q", err, tt.wantField)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error %q quotes an env value", err)
			}
		})
	}
}
