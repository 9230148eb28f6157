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
			name: "tenant and resources",
			json: `{"tenant":"acme-2","image":"alpine","command":["true"],"cpus":2,"mem_mib":512}`,
			want: tasks.AgentRun{Tenant: "acme-2", Image: "alpine", Command: []string{"true"}, CPUs: 2, MemMiB: 512},
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
		{"secret typed as an env key", `{` + ok + `,"env":{"` + secret + `":"x"}}`, "env"},
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
		{"tenant upper case", `{"tenant":"Acme",` + ok + `}`, "tenant"},
		{"tenant a number", `{"tenant":7,` + ok + `}`, "payload"},
		{"cpus a string", `{"cpus":"2",` + ok + `}`, "payload"},
		{"cpus a fraction", `{"cpus":1.5,` + ok + `}`, "payload"},
		{"cpus overflowing int", `{"cpus":99999999999999999999,` + ok + `}`, "payload"},
		{"mem_mib over 1 TiB", `{"mem_mib":1048577,` + ok + `}`, "mem_mib"},
		{"misspelt mem", `{"mem":512,` + ok + `}`, "payload"},
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
				t.Errorf("error %q quotes an env value (or a key that may be one)", msg)
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

// TestTenantAndResources: tenant follows ^[a-z0-9][a-z0-9-]{0,62}$ and
// reads as DefaultTenant when empty; cpus and mem_mib are 0 (the worker's
// default) or within 1..MaxCPUs and 1..MaxMemMiB. Each refusal is one line
// naming the field.
func TestTenantAndResources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		fields     string // JSON members added to a valid payload
		wantTenant string // TenantName of the decoded payload
		wantCPUs   int
		wantMem    int
		wantField  string // the field an error names; "" for none
		wantReason string // in the error's reason
	}{
		{name: "no tenant is the default", fields: ``, wantTenant: tasks.DefaultTenant},
		{name: "empty tenant is the default", fields: `"tenant":"",`, wantTenant: tasks.DefaultTenant},
		{name: "the default by name", fields: `"tenant":"default",`, wantTenant: tasks.DefaultTenant},
		{name: "one character", fields: `"tenant":"a",`, wantTenant: "a"},
		{name: "digits and dashes", fields: `"tenant":"0-team-b-",`, wantTenant: "0-team-b-"},
		{name: "63 characters", fields: `"tenant":"` + strings.Repeat("a", 63) + `",`, wantTenant: strings.Repeat("a", 63)},
		{name: "64 characters", fields: `"tenant":"` + strings.Repeat("a", 64) + `",`, wantField: "tenant", wantReason: "is 64 bytes, more than 63"},
		{name: "upper case", fields: `"tenant":"Acme",`, wantField: "tenant", wantReason: `"Acme" may hold only lower-case letters`},
		{name: "leading dash", fields: `"tenant":"-acme",`, wantField: "tenant", wantReason: `"-acme" must not start with '-'`},
		{name: "a dot", fields: `"tenant":"acme.io",`, wantField: "tenant", wantReason: "may hold only"},
		{name: "an underscore", fields: `"tenant":"a_b",`, wantField: "tenant", wantReason: "may hold only"},
		{name: "a slash", fields: `"tenant":"a/../b",`, wantField: "tenant", wantReason: "may hold only"},
		{name: "white space", fields: `"tenant":" acme",`, wantField: "tenant", wantReason: "may hold only"},
		{name: "a newline", fields: `"tenant":"a\nb",`, wantField: "tenant", wantReason: `"a\nb" may hold only`},
		{name: "non-ASCII letter", fields: `"tenant":"ácme",`, wantField: "tenant", wantReason: "may hold only"},
		{name: "cpus 0 is the worker's default", fields: `"cpus":0,`, wantTenant: tasks.DefaultTenant},
		{name: "cpus 1", fields: `"cpus":1,`, wantTenant: tasks.DefaultTenant, wantCPUs: 1},
		{name: "cpus 255", fields: `"cpus":255,`, wantTenant: tasks.DefaultTenant, wantCPUs: 255},
		{name: "cpus 256", fields: `"cpus":256,`, wantField: "cpus", wantReason: "256 is out of range: 1 to 255"},
		{name: "cpus -1", fields: `"cpus":-1,`, wantField: "cpus", wantReason: "-1 is out of range"},
		{name: "mem_mib 0 is the worker's default", fields: `"mem_mib":0,`, wantTenant: tasks.DefaultTenant},
		{name: "mem_mib 1", fields: `"mem_mib":1,`, wantTenant: tasks.DefaultTenant, wantMem: 1},
		{name: "mem_mib 1 TiB", fields: `"mem_mib":1048576,`, wantTenant: tasks.DefaultTenant, wantMem: tasks.MaxMemMiB},
		{name: "mem_mib over 1 TiB", fields: `"mem_mib":1048577,`, wantField: "mem_mib", wantReason: "1048577 is out of range: 1 to 1048576 MiB (1 TiB)"},
		{name: "mem_mib -1", fields: `"mem_mib":-1,`, wantField: "mem_mib", wantReason: "-1 is out of range"},
		{name: "mem_mib far beyond int32", fields: `"mem_mib":4294967296,`, wantField: "mem_mib", wantReason: "out of range"},
		{name: "all of them", fields: `"tenant":"acme","cpus":4,"mem_mib":2048,`, wantTenant: "acme", wantCPUs: 4, wantMem: 2048},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			data := `{` + tt.fields + `"image":"alpine","command":["true"]}`
			p, err := tasks.Decode([]byte(data))
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Decode(%s): %v", data, err)
				}
				if p.TenantName() != tt.wantTenant || p.CPUs != tt.wantCPUs || p.MemMiB != tt.wantMem {
					t.Errorf("Decode(%s) = tenant %q, cpus %d, mem_mib %d; want %q, %d, %d",
						data, p.TenantName(), p.CPUs, p.MemMiB, tt.wantTenant, tt.wantCPUs, tt.wantMem)
				}
				return
			}
			var ve *tasks.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Decode(%s) error = %v, want a *tasks.ValidationError", data, err)
			}
			msg := err.Error()
			if ve.Field != tt.wantField || !strings.HasPrefix(msg, tt.wantField+": ") ||
				!strings.Contains(ve.Reason, tt.wantReason) || strings.ContainsAny(msg, "\n\r") {
				t.Errorf("Decode(%s) error = %q (field %q), want one line for %q containing %q", data, msg, ve.Field, tt.wantField, tt.wantReason)
			}
		})
	}
}

// TestValidateTenant: the function producers and the CLI call directly
// refuses the empty name, which only a payload reads as the default.
func TestValidateTenant(t *testing.T) {
	t.Parallel()
	for name, wantErr := range map[string]bool{"": true, "a": false, "default": false, "9z-": false, "-": true, "A": true} {
		err := tasks.ValidateTenant(name)
		var ve *tasks.ValidationError
		if got := err != nil; got != wantErr || (err != nil && (!errors.As(err, &ve) || ve.Field != "tenant")) {
			t.Errorf("ValidateTenant(%q) = %v, want an error for tenant: %t", name, err, wantErr)
		}
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
		Tenant:  "acme",
		Image:   "alpine:3.20",
		Command: []string{"sh", "-c", "echo $API_KEY >/dev/null"},
		Env:     map[string]string{"API_KEY": secret},
		Workdir: "/src",
		Commit:  tasks.Bool(false),
		CPUs:    2,
		MemMiB:  1024,
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
		{"secret as env key", tasks.AgentRun{Image: "alpine", Command: []string{"true"}, Env: map[string]string{"API_KEY=" + secret: "x"}}, "env"},
		{"timeout too long", tasks.AgentRun{Image: "alpine", Command: []string{"true"}, Timeout: tasks.Duration(25 * time.Hour)}, "timeout"},
		{"future version", tasks.AgentRun{Version: 2, Image: "alpine", Command: []string{"true"}}, "version"},
		{"bad tenant", tasks.AgentRun{Tenant: "Acme", Image: "alpine", Command: []string{"true"}}, "tenant"},
		{"too many cpus", tasks.AgentRun{Image: "alpine", Command: []string{"true"}, CPUs: 256}, "cpus"},
		{"too much memory", tasks.AgentRun{Image: "alpine", Command: []string{"true"}, MemMiB: tasks.MaxMemMiB + 1}, "mem_mib"},
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
