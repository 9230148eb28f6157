package enqueue_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/tasks"
)

// An upstream service enqueues an agent run, follows its phases, and reads
// the agent's output. It needs a Redis and a bottleq worker, so this
// example is compiled but not run.
func Example() {
	ctx := context.Background()
	c, err := enqueue.NewFromURL("redis://127.0.0.1:6379")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	info, err := c.Enqueue(ctx, tasks.AgentRun{
		Tenant:  "acme", // whose run this is; empty means tasks.DefaultTenant
		Image:   "ghcr.io/example/agent:1",
		Command: []string{"agent", "--task", "fix the flaky test"},
		Env:     map[string]string{"API_KEY": os.Getenv("API_KEY")},
		Timeout: tasks.Duration(30 * time.Minute),
	}, enqueue.Options{TaskID: "pr-1234-fix"}) // enqueueing pr-1234-fix twice is an ErrDuplicate
	if err != nil {
		log.Fatal(err)
	}

	out, err := c.Wait(ctx, info.Queue, info.ID, func(r tasks.Result) {
		log.Printf("task %s: %s", info.ID, r.Phase)
	})
	var failed *enqueue.TaskFailedError
	switch {
	case errors.As(err, &failed):
		log.Fatalf("the worker gave up: %s", failed.LastErr)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Print(out.Result.Stdout)
	if out.Result.ExitCode != 0 {
		log.Printf("agent exited %d", out.Result.ExitCode)
	}
	if out.Result.Commit != "" {
		// The next run starts from where this one ended; a commit serves
		// only its own tenant's tasks.
		_, _ = c.Enqueue(ctx, tasks.AgentRun{
			Tenant:  "acme",
			From:    tasks.FromTaskPrefix + info.ID,
			Command: []string{"agent", "--task", "now write the changelog"},
		}, enqueue.Options{})
	}
}

// A task nobody has started yet is cancelled at once; Wait then reports
// it cancelled. Here no worker serves the queue, which Workers tells.
func ExampleClient_Cancel() {
	ctx := context.Background()
	redis, err := miniredis.Run() // an in-process Redis stands in for yours
	if err != nil {
		log.Fatal(err)
	}
	defer redis.Close()
	c := enqueue.New(asynq.RedisClientOpt{Addr: redis.Addr()})
	defer c.Close()

	info, err := c.Enqueue(ctx, tasks.AgentRun{Image: "alpine:3.20", Command: []string{"sleep", "600"}},
		enqueue.Options{Queue: "nightly", TaskID: "nightly-42"})
	if err != nil {
		log.Fatal(err)
	}
	n, err := c.Workers(ctx, info.Queue)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d workers serve queue %s\n", n, info.Queue)

	out, err := c.Cancel(ctx, info.Queue, info.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(out.TaskID, out.State, out.Result.State)

	_, err = c.Wait(ctx, info.Queue, info.ID, nil)
	fmt.Println(errors.Is(err, enqueue.ErrCancelled), err)
	// Output:
	// 0 workers serve queue nightly
	// nightly-42 archived cancelled
	// true task nightly-42 was cancelled
}
