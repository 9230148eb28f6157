package main

import (
	"strings"

	"github.com/hibiken/asynq"
)

// skipRetrySuffix is what asynq's SkipRetry added to the error of a task
// that an older worker archived without a retry: it wrapped the user's
// message with fmt.Errorf("%w: %w", err, asynq.SkipRetry), and asynq keeps
// err.Error() as the task's LastErr. Workers now keep asynq's text out of
// it.
var skipRetrySuffix = ": " + asynq.SkipRetry.Error()

// shownErr is a task's LastErr as enqueue prints it: without the asynq text
// an older worker left at its end.
func shownErr(lastErr string) string { return strings.TrimSuffix(lastErr, skipRetrySuffix) }
