package redisurl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultWait is how long a command waits at start for Redis to answer
// PING (its -redis-wait flag's default): long enough for a Redis started
// beside it to come up, short enough that a wrong address is reported
// soon.
const DefaultWait = 10 * time.Second

// ErrNoAnswer is [Ping]'s error when Redis did not answer in time.
var ErrNoAnswer = errors.New("no answer from Redis")

// Ping sends PING through rc until Redis answers, for up to wait (one
// try if wait is zero or less), and returns nil at the first answer. If
// none came in time its error matches ErrNoAnswer and wraps the last
// failure of a try that ended before the deadline: a refused connection,
// say (a try takes a second or two: go-redis retries inside it). An
// answer that waiting cannot change, such as a wrong password
// (redis.IsAuthError) or a TLS certificate not trusted, is returned at
// once, wrapped. When ctx ends first, the error matches ctx's.
//
// While Ping waits, the go-redis lines [RouteLogs] would hand on are
// dropped: Ping's error reports what they would. Call it at start, before
// anything else uses Redis.
func Ping(ctx context.Context, rc redis.UniversalClient, wait time.Duration) error {
	pinging.Add(1)
	defer pinging.Add(-1)
	deadline := time.Now().Add(wait)
	pause := 100 * time.Millisecond
	var last error
	for {
		tryCtx, cancel := tryContext(ctx, wait, deadline)
		err := rc.Ping(tryCtx).Err()
		cancel()
		switch {
		case err == nil || redis.IsPermissionError(err):
			// Answered: a user not allowed PING is still a Redis that
			// is up and took the password.
			return nil
		case ctx.Err() != nil:
			return fmt.Errorf("waiting for Redis: %w", context.Cause(ctx))
		case !retryable(err):
			return fmt.Errorf("PING: %w", err)
		}
		// A try cut short by the deadline says less than the one before.
		if !errors.Is(err, context.DeadlineExceeded) {
			last = err
		}
		left := time.Until(deadline)
		switch {
		case wait <= 0:
			return fmt.Errorf("%w: %w", ErrNoAnswer, err)
		case left > 0:
		case last == nil: // no try ended before the deadline
			return fmt.Errorf("%w within %s", ErrNoAnswer, wait)
		default:
			return fmt.Errorf("%w within %s: %w", ErrNoAnswer, wait, last)
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for Redis: %w", context.Cause(ctx))
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}

// tryContext is the context of one PING: it ends at the deadline, or
// for a single try (wait zero or less) only with ctx, the client's own
// timeouts bounding the try.
func tryContext(ctx context.Context, wait time.Duration, deadline time.Time) (context.Context, context.CancelFunc) {
	if wait <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, deadline)
}

// retryable tells a failure that may pass (Redis not listening yet, still
// loading its data, a master being elected) from one that will not.
func retryable(err error) bool {
	var re redis.Error
	if errors.As(err, &re) {
		return redis.IsLoadingError(err) || redis.IsMasterDownError(err) ||
			redis.IsTryAgainError(err) || redis.IsMaxClientsError(err)
	}
	var (
		verify  *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		header  tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, redis.ErrClosed),
		errors.As(err, &verify), errors.As(err, &unknown), errors.As(err, &host),
		errors.As(err, &header):
		return false
	}
	return true
}
