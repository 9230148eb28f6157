package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/testredis"
	"github.com/bot-bottle/bottleq/internal/testworker"
	"github.com/bot-bottle/bottleq/tasks"
)

const secret = "s3cr3t-env-VALUE"

func payload() tasks.AgentRun {
	return tasks.AgentRun{
		Image:   "alpine:3.20",
		Command: []string{"sh", "-c", "echo hi"},
		Env:     map[string]string{"API_KEY": secret},
	}
}

// withFile returns p with one file of n bytes.
func withFile(p tasks.AgentRun, n int) tasks.AgentRun {
	p.Files = []tasks.File{{Path: "/in/f", Content: make([]byte, n)}}
	return p
}

func newClient(t *testing.T, r asynq.RedisConnOpt) *enqueue.Client {
	t.Helper()
	c := enqueue.New(r)
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

func newInspector(t *testing.T, r asynq.RedisConnOpt) *asynq.Inspector {
	t.Helper()
	i := asynq.NewInspector(r)
	t.Cleanup(func() { _ = i.Close() })
	return i
}

func TestEnqueueWait(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		run         func(context.Context, tasks.AgentRun, int) (tasks.Result, error)
		wantState   asynq.TaskState
		wantExit    int
		wantStdout  string
		wantRetried int
		wantLastErr string // archived only
	}{
		{
			name: "exit 0",
			run: func(_ context.Context, p tasks.AgentRun, _ int) (tasks.Result, error) {
				return tasks.Result{Stdout: strings.Join(p.Command, " ")}, nil
			},
			wantState:  asynq.TaskStateCompleted,
			wantStdout: "sh -c echo hi",
		},
		{
			name: "exit 3 still completes",
			run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
				return tasks.Result{ExitCode: 3, Stderr: "boom"}, nil
			},
			wantState: asynq.TaskStateCompleted,
			wantExit:  3,
		},
		{
			name: "retried once then done",
			run: func(_ context.Context, _ tasks.AgentRun, attempt int) (tasks.Result, error) {
				if attempt == 1 {
					return tasks.Result{}, errors.New("smolvm: machine start: flaky")
				}
				return tasks.Result{Stdout: fmt.Sprintf("attempt %d", attempt)}, nil
			},
			wantState:   asynq.TaskStateCompleted,
			wantStdout:  "attempt 2",
			wantRetried: 1,
		},
		{
			name: "permanent failure is archived",
			run: func(context.Context, tasks.AgentRun, int) (tasks.Result, error) {
				return tasks.Result{}, fmt.Errorf("from: no commit for task x: %w", asynq.SkipRetry)
			},
			wantState:   asynq.TaskStateArchived,
			wantLastErr: "from: no commit for task x",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			testworker.Serve(t, r, &testworker.Agent{Phases: []string{tasks.PhasePack}, Run: tt.run})
			c := newClient(t, r)
			ctx := context.Background()

			info, err := c.Enqueue(ctx, payload(), enqueue.Options{})
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			out, err := c.Wait(ctx, info.Queue, info.ID, nil)

			if out.State != tt.wantState || out.TaskID != info.ID || out.Queue != tasks.DefaultQueue {
				t.Errorf("Outcome = %s %s/%s, want %s %s/%s", out.State, out.Queue, out.TaskID, tt.wantState, tasks.DefaultQueue, info.ID)
			}
			if out.Retried != tt.wantRetried {
				t.Errorf("Retried = %d, want %d", out.Retried, tt.wantRetried)
			}
			if tt.wantState == asynq.TaskStateArchived {
				var fe *enqueue.TaskFailedError
				if !errors.As(err, &fe) {
					t.Fatalf("Wait error = %v, want a *TaskFailedError", err)
				}
				if fe.TaskID != info.ID || fe.State != asynq.TaskStateArchived || !strings.Contains(fe.LastErr, tt.wantLastErr) {
					t.Errorf("TaskFailedError = %+v, want task %s archived with LastErr containing %q", fe, info.ID, tt.wantLastErr)
				}
				if !strings.Contains(out.LastErr, tt.wantLastErr) {
					t.Errorf("Outcome.LastErr = %q, want it to contain %q", out.LastErr, tt.wantLastErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if out.Result.State != tasks.StateDone || out.Result.ExitCode != tt.wantExit || out.Result.Stdout != tt.wantStdout {
				t.Errorf("Result = %+v, want state %q, exit code %d, stdout %q", out.Result, tasks.StateDone, tt.wantExit, tt.wantStdout)
			}
		})
	}
}

// TestWaitProgress holds the stand-in worker at each phase until Wait has
// reported it, so every phase is seen whatever the timing. At the first
// phase it also lets Wait poll a few more times, which must not report the
// phase again.
func TestWaitProgress(t *testing.T) {
	t.Parallel()
	phases := []string{tasks.PhasePack, tasks.PhaseCreate, tasks.PhaseStart, tasks.PhaseExec, tasks.PhaseCommit}
	seen := make(chan string, len(phases))
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	polled := make(chan struct{}, 1)
	c := newClient(t, signalingOpt{r, polled})
	testworker.Serve(t, r, &testworker.Agent{
		Phases: phases,
		Step: func(ctx context.Context, phase string) error {
			select {
			case got := <-seen:
				if got != phase {
					return fmt.Errorf("Wait reported %q while the worker was at %q: %w", got, phase, asynq.SkipRetry)
				}
			case <-ctx.Done():
				return ctx.Err()
			}
			if phase != phases[0] {
				return nil
			}
			// A poll is one or two Redis commands; after five more, Wait
			// has handled at least one whole poll at this phase.
			select {
			case <-polled:
			default:
			}
			for range 5 {
				select {
				case <-polled:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		},
	})
	ctx := context.Background()
	info, err := c.Enqueue(ctx, payload(), enqueue.Options{})
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}

	var got []string
	out, err := c.Wait(ctx, info.Queue, info.ID, func(r tasks.Result) {
		if r.State != tasks.StateRunning || r.Attempt != 1 {
			t.Errorf("progress got %+v, want a running result of attempt 1", r)
		}
		got = append(got, r.Phase)
		select {
		case seen <- r.Phase:
		default:
			t.Errorf("progress reported %q while the worker has not moved on", r.Phase)
		}
	})
	if err != nil {
		t.Fatalf("Wait: %v (outcome %+v)", err, out)
	}
	if strings.Join(got, ",") != strings.Join(phases, ",") {
		t.Errorf("progress phases = %q, want %q", got, phases)
	}
}

// signalingOpt connects to Redis with a client that signals on done after
// each command, so a test can wait for Wait to poll without sleeping.
type signalingOpt struct {
	asynq.RedisClientOpt
	done chan struct{}
}

func (o signalingOpt) MakeRedisClient() any {
	c := o.RedisClientOpt.MakeRedisClient().(*redis.Client)
	c.AddHook(signalHook(o.done))
	return c
}

type signalHook chan struct{}

func (h signalHook) signal() {
	select {
	case h <- struct{}{}:
	default:
	}
}

func (h signalHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h signalHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		defer h.signal()
		return next(ctx, cmd)
	}
}

func (h signalHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		defer h.signal()
		return next(ctx, cmds)
	}
}

func TestEnqueueDuplicateTaskID(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	ctx := context.Background()
	o := enqueue.Options{TaskID: "job-42"}

	info, err := c.Enqueue(ctx, payload(), o)
	if err != nil {
		t.Fatalf("first Enqueue: %v", err)
	}
	if info.ID != "job-42" {
		t.Errorf("ID = %q, want job-42", info.ID)
	}
	_, err = c.Enqueue(ctx, payload(), o)
	if !errors.Is(err, enqueue.ErrDuplicate) || !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Fatalf("second Enqueue error = %v, want ErrDuplicate and asynq.ErrTaskIDConflict", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error %q quotes an env value", err)
	}
}

func TestEnqueueInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		p         tasks.AgentRun
		o         enqueue.Options
		wantField string // a *tasks.ValidationError for this field; "" for invalid options
	}{
		{name: "no command", p: tasks.AgentRun{Image: "alpine"}, wantField: "command"},
		{name: "image and from", p: tasks.AgentRun{Image: "alpine", From: "task:x", Command: []string{"true"}}, wantField: "from"},
		{name: "bad env key", p: tasks.AgentRun{Image: "alpine", Command: []string{"true"}, Env: map[string]string{"1A": secret}}, wantField: "env"},
		{name: "upper-case tenant", p: tasks.AgentRun{Tenant: "Acme", Image: "alpine", Command: []string{"true"}}, wantField: "tenant"},
		{name: "256 cpus", p: tasks.AgentRun{Image: "alpine", Command: []string{"true"}, CPUs: 256}, wantField: "cpus"},
		{name: "negative memory", p: tasks.AgentRun{Image: "alpine", Command: []string{"true"}, MemMiB: -1}, wantField: "mem_mib"},
		{name: "sub-second timeout option", p: payload(), o: enqueue.Options{Timeout: 500 * time.Millisecond}},
		{name: "timeout option shorter than the command's", p: payload(), o: enqueue.Options{Timeout: time.Minute}},
		{name: "sub-second retention", p: payload(), o: enqueue.Options{Retention: time.Millisecond}},
		{name: "negative files cap", p: payload(), o: enqueue.Options{MaxFilesBytes: -1}},
		{name: "blank queue", p: payload(), o: enqueue.Options{Queue: " "}},
		{name: "queue with braces", p: payload(), o: enqueue.Options{Queue: "q{1}"}},
		{name: "65-character queue", p: payload(), o: enqueue.Options{Queue: strings.Repeat("q", 65)}},
		{name: "files over the default cap", p: withFile(payload(), 1<<20+1), wantField: "files"},
		{name: "files over a lowered cap", p: withFile(payload(), 100), o: enqueue.Options{MaxFilesBytes: 99}, wantField: "files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			c := newClient(t, r)

			info, err := c.Enqueue(context.Background(), tt.p, tt.o)

			if info != nil {
				t.Errorf("Enqueue returned a task: %+v", info)
			}
			if tt.wantField != "" {
				var ve *tasks.ValidationError
				if !errors.As(err, &ve) || ve.Field != tt.wantField {
					t.Errorf("error = %v, want a *tasks.ValidationError for %q", err, tt.wantField)
				}
			} else if !errors.Is(err, enqueue.ErrInvalidOptions) {
				t.Errorf("error = %v, want ErrInvalidOptions", err)
			}
			if err != nil && strings.Contains(err.Error(), secret) {
				t.Errorf("error %q quotes an env value", err)
			}
			queues, err := newInspector(t, r).Queues()
			if err != nil {
				t.Fatalf("Queues: %v", err)
			}
			if len(queues) != 0 {
				t.Errorf("queues after a refused Enqueue = %q, want none", queues)
			}
		})
	}
}

func TestEnqueueOptions(t *testing.T) {
	t.Parallel()
	p := payload()
	p.Timeout = tasks.Duration(90 * time.Second)
	tests := []struct {
		name string
		o    enqueue.Options
		want asynq.TaskInfo
	}{
		{
			name: "zero options keep the defaults",
			want: asynq.TaskInfo{
				Queue:     tasks.DefaultQueue,
				MaxRetry:  tasks.DefaultMaxRetry,
				Timeout:   90*time.Second + tasks.PipelineOverhead,
				Retention: tasks.DefaultRetention,
			},
		},
		{
			name: "options override",
			o:    enqueue.Options{Queue: "agents", MaxRetry: 2, Timeout: time.Hour, TaskID: "t1", Retention: time.Hour},
			want: asynq.TaskInfo{ID: "t1", Queue: "agents", MaxRetry: 2, Timeout: time.Hour, Retention: time.Hour},
		},
		{
			name: "raised files cap",
			o:    enqueue.Options{MaxFilesBytes: 2 << 20},
			want: asynq.TaskInfo{
				Queue:     tasks.DefaultQueue,
				MaxRetry:  tasks.DefaultMaxRetry,
				Timeout:   90*time.Second + tasks.PipelineOverhead,
				Retention: tasks.DefaultRetention,
			},
		},
		{
			name: "NoRetry",
			o:    enqueue.Options{MaxRetry: enqueue.NoRetry},
			want: asynq.TaskInfo{
				Queue:     tasks.DefaultQueue,
				Timeout:   90*time.Second + tasks.PipelineOverhead,
				Retention: tasks.DefaultRetention,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			c := newClient(t, r)

			p := p
			if tt.o.MaxFilesBytes > 0 {
				p = withFile(p, int(tt.o.MaxFilesBytes))
			}
			info, err := c.Enqueue(context.Background(), p, tt.o)
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			// Read it back as stored rather than trusting Enqueue's echo.
			got, err := newInspector(t, r).GetTaskInfo(info.Queue, info.ID)
			if err != nil {
				t.Fatalf("GetTaskInfo: %v", err)
			}
			if tt.want.ID != "" && got.ID != tt.want.ID {
				t.Errorf("ID = %q, want %q", got.ID, tt.want.ID)
			}
			if got.Type != tasks.TypeAgentRun || got.Queue != tt.want.Queue || got.MaxRetry != tt.want.MaxRetry ||
				got.Timeout != tt.want.Timeout || got.Retention != tt.want.Retention {
				t.Errorf("stored task = type %s queue %s max retry %d timeout %s retention %s, want %s %s %d %s %s",
					got.Type, got.Queue, got.MaxRetry, got.Timeout, got.Retention,
					tasks.TypeAgentRun, tt.want.Queue, tt.want.MaxRetry, tt.want.Timeout, tt.want.Retention)
			}
		})
	}
}

// TestEnqueueTenantAndResources: tenant, cpus and mem_mib travel in the
// payload as stored in Redis (read back with asynq's inspector), a payload
// without them stores none (the worker's defaults apply), and the tenant a
// worker writes into the result comes back through Wait.
func TestEnqueueTenantAndResources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name              string
		tenant            string
		cpus, mem         int
		wantTenant        string // TenantName of the stored payload
		wantIn, wantNotIn []string
	}{
		{
			name: "set", tenant: "acme-2", cpus: 2, mem: 1536, wantTenant: "acme-2",
			wantIn: []string{`"tenant":"acme-2"`, `"cpus":2`, `"mem_mib":1536`},
		},
		{
			name: "limits", tenant: strings.Repeat("z", tasks.MaxTenantLen), cpus: tasks.MaxCPUs, mem: tasks.MaxMemMiB,
			wantTenant: strings.Repeat("z", tasks.MaxTenantLen),
			wantIn:     []string{`"cpus":255`, `"mem_mib":1048576`},
		},
		{
			name: "unset", wantTenant: tasks.DefaultTenant,
			wantNotIn: []string{`"tenant"`, `"cpus"`, `"mem_mib"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
			c := newClient(t, r)
			ctx := context.Background()
			p := payload()
			p.Tenant, p.CPUs, p.MemMiB = tt.tenant, tt.cpus, tt.mem

			info, err := c.Enqueue(ctx, p, enqueue.Options{TaskID: "t-" + tt.name})
			if err != nil {
				t.Fatalf("Enqueue: %v", err)
			}
			stored, err := newInspector(t, r).GetTaskInfo(info.Queue, info.ID)
			if err != nil {
				t.Fatalf("GetTaskInfo: %v", err)
			}
			raw := string(stored.Payload)
			for _, want := range tt.wantIn {
				if !strings.Contains(raw, want) {
					t.Errorf("stored payload %s does not contain %s", raw, want)
				}
			}
			for _, unwanted := range tt.wantNotIn {
				if strings.Contains(raw, unwanted) {
					t.Errorf("stored payload %s contains %s", raw, unwanted)
				}
			}
			got, err := tasks.Decode(stored.Payload)
			if err != nil {
				t.Fatalf("Decode(stored payload): %v", err)
			}
			if got.Tenant != tt.tenant || got.TenantName() != tt.wantTenant || got.CPUs != tt.cpus || got.MemMiB != tt.mem {
				t.Errorf("stored payload = tenant %q (%q), cpus %d, mem_mib %d; want %q (%q), %d, %d",
					got.Tenant, got.TenantName(), got.CPUs, got.MemMiB, tt.tenant, tt.wantTenant, tt.cpus, tt.mem)
			}

			// A worker decodes the same payload and names the tenant in its result.
			testworker.Serve(t, r, &testworker.Agent{
				Run: func(_ context.Context, p tasks.AgentRun, _ int) (tasks.Result, error) {
					return tasks.Result{Tenant: p.TenantName()}, nil
				},
			})
			out, err := c.Wait(ctx, info.Queue, info.ID, nil)
			if err != nil {
				t.Fatalf("Wait: %v", err)
			}
			if out.Result.Tenant != tt.wantTenant {
				t.Errorf("Result.Tenant = %q, want %q", out.Result.Tenant, tt.wantTenant)
			}
		})
	}
}

func TestWaitNotFound(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr}
	c := newClient(t, r)
	ctx := context.Background()
	if _, err := c.Enqueue(ctx, payload(), enqueue.Options{}); err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	tests := []struct {
		name, queue string
		asynqErr    error
	}{
		{name: "unknown task", queue: tasks.DefaultQueue, asynqErr: asynq.ErrTaskNotFound},
		{name: "unknown queue", queue: "nope", asynqErr: asynq.ErrQueueNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.Wait(ctx, tt.queue, "no-such-task", nil)
			if !errors.Is(err, enqueue.ErrNotFound) || !errors.Is(err, tt.asynqErr) {
				t.Errorf("Wait error = %v, want ErrNotFound and %v", err, tt.asynqErr)
			}
		})
	}
}

func TestWaitCanceled(t *testing.T) {
	t.Parallel()
	r := asynq.RedisClientOpt{Addr: testredis.Mini(t).Addr} // no server: the task stays pending
	c := newClient(t, r)
	info, err := c.Enqueue(context.Background(), payload(), enqueue.Options{})
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	out, err := c.Wait(ctx, info.Queue, info.ID, nil)

	if !errors.Is(err, context.Canceled) {
		t.Errorf("Wait error = %v, want context.Canceled", err)
	}
	if out.TaskID != info.ID || (out.State != 0 && out.State != asynq.TaskStatePending) {
		t.Errorf("Outcome = %+v, want task %s, pending or not yet read", out, info.ID)
	}
}
