package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// inFlightGrace spares a reserved run whose task is not in Redis yet from
// being pruned: its request may still be enqueueing it.
const inFlightGrace = time.Minute

// openTTL is how long a tenant's set of open runs outlives its last
// change.
const openTTL = 30 * 24 * time.Hour

// reserveScript counts run ARGV[1] among the tenant's open runs (KEYS[1])
// if fewer than ARGV[2] are open, or if it is counted already: 1 when it
// is, 0 when the tenant is at the cap.
var reserveScript = redis.NewScript(`
if redis.call("ZSCORE", KEYS[1], ARGV[1]) then
	return 1
end
if redis.call("ZCARD", KEYS[1]) >= tonumber(ARGV[2]) then
	return 0
end
redis.call("ZADD", KEYS[1], ARGV[3], ARGV[1])
redis.call("EXPIRE", KEYS[1], ARGV[4])
return 1
`)

// reserve counts member ("QUEUE ID") among the tenant's open runs, or
// returns a 429 when the tenant has MaxOpenRuns open. At the cap it first
// drops the runs that have ended, then tries once more.
func (s *Server) reserve(ctx context.Context, tenant, member string) *Error {
	if s.cfg.MaxOpenRuns < 0 {
		return nil
	}
	key := openKey(tenant)
	for try := 0; try < 2; try++ {
		now := time.Now()
		ok, err := reserveScript.Run(ctx, s.rdb, []string{key}, member, s.cfg.MaxOpenRuns,
			strconv.FormatInt(now.UnixMilli(), 10), int(openTTL/time.Second)).Int()
		if err != nil {
			return errRedis(err)
		}
		if ok == 1 {
			return nil
		}
		if try == 0 {
			if err := s.prune(ctx, key, now); err != nil {
				return errRedis(err)
			}
		}
	}
	e := errorf(http.StatusTooManyRequests, CodeTooManyRuns, "",
		fmt.Sprintf("tenant %s has %d runs that have not finished, the most it may have; start more when some finish", tenant, s.cfg.MaxOpenRuns))
	e.RetryAfter = openRetryAfter
	return e
}

// prune drops from the tenant's open runs those that have finished or no
// longer exist.
func (s *Server) prune(ctx context.Context, key string, now time.Time) error {
	members, err := s.rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
	if err != nil {
		return err
	}
	var gone []any
	for _, m := range members {
		member, _ := m.Member.(string)
		queue, id, _ := strings.Cut(member, " ")
		ri, found, err := s.read(ctx, queue, id)
		if err != nil {
			return err
		}
		reserved := time.UnixMilli(int64(m.Score))
		if found && !ri.final() || !found && now.Sub(reserved) < inFlightGrace {
			continue
		}
		gone = append(gone, member)
	}
	if len(gone) > 0 {
		return s.rdb.ZRem(ctx, key, gone...).Err()
	}
	return nil
}
