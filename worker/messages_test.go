package worker

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/bot-bottle/bottleq/tasks"
)

// TestNoRetry: noRetry's error is archived by asynq without a retry
// (asynq tests errors.Is(err, asynq.SkipRetry)), still is what it wraps,
// and reads as that alone.
func TestNoRetry(t *testing.T) {
	t.Parallel()
	ve := &tasks.ValidationError{Field: "command", Reason: "must not be empty"}
	err := noRetry(fmt.Errorf("decode: %w", ve))
	var got *tasks.ValidationError
	if !errors.Is(err, asynq.SkipRetry) || !errors.As(err, &got) || got != ve {
		t.Errorf("noRetry(%v) matches SkipRetry %v, the validation error %v", err, errors.Is(err, asynq.SkipRetry), got == ve)
	}
	if err.Error() != "decode: command: must not be empty" {
		t.Errorf("Error() = %q", err.Error())
	}
	if errors.Is(noRetry(errors.New("x")), asynq.RevokeTask) {
		t.Error("noRetry's error matches RevokeTask: asynq would drop the task instead of archiving it")
	}
}
