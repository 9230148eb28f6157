package tasks_test

import (
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// A producer builds an agent:run task and enqueues it with a plain asynq
// client. NewAgentRun has already set the options that matter (the timeout
// covers the VM pipeline, retries, retention); asynq options passed to it
// override them. The package enqueue wraps this and also waits for the
// result.
func ExampleNewAgentRun() {
	task, err := tasks.NewAgentRun(tasks.AgentRun{
		Tenant:  "acme", // its commit serves only acme's later tasks
		Image:   "alpine:3.20",
		Command: []string{"sh", "-c", "echo hello"},
		CPUs:    2, // less than the worker's cap; 0 takes the worker's default
		MemMiB:  2048,
		Timeout: tasks.Duration(90 * time.Second),
		Commit:  tasks.Bool(false),
	}, asynq.Queue("agents"))
	if err != nil {
		log.Fatal(err) // a *tasks.ValidationError: nothing to enqueue
	}
	fmt.Println(task.Type())
	fmt.Println(string(task.Payload()))

	// An in-process Redis stands in for yours here.
	redis, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer redis.Close()
	client := asynq.NewClient(asynq.RedisClientOpt{Addr: redis.Addr()})
	defer client.Close()

	info, err := client.Enqueue(task)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(info.Queue, info.MaxRetry, info.Timeout)
	// Output:
	// agent:run
	// {"version":1,"tenant":"acme","image":"alpine:3.20","command":["sh","-c","echo hello"],"cpus":2,"mem_mib":2048,"timeout":"1m30s","commit":false}
	// agents 5 21m30s
}
