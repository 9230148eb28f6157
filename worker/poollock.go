package worker

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// poolLockTTL is how long a pool lock outlives a holder that stops
// renewing it (a killed worker); the holder renews it every third of it.
const poolLockTTL = 15 * time.Second

// poolLockPrefix starts the Redis key of each pool lock.
const poolLockPrefix = "bottleq:lock:"

// Scripts that touch a lock only while it holds the caller's token.
var (
	renewLock = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("PEXPIRE", KEYS[1], ARGV[2]) end return 0`)
	dropLock  = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)
)

// RedisPoolLock returns the PoolLock of the workers sharing rdb: a key
// bottleq:lock:NAME set, if absent, to a random token of its holder with a
// time to live (SET NX PX), renewed while held, and deleted on unlock only
// while it still holds that token. A holder that dies without unlocking
// (kill -9) loses the lock within 15 seconds; a Redis that fails to renew
// it does the same, and the worst that comes of it is that a second host
// packs the image too. cmd/worker hands it the client it serves with.
func RedisPoolLock(rdb redis.UniversalClient) PoolLock {
	return func(ctx context.Context, name string) (func(), bool, error) {
		key, token := poolLockPrefix+name, randHex(16)
		ok, err := rdb.SetNX(ctx, key, token, poolLockTTL).Result()
		if err != nil || !ok {
			return nil, false, err
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(poolLockTTL / 3)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					rctx, cancel := context.WithTimeout(context.Background(), poolLockTTL/3)
					renewLock.Run(rctx, rdb, []string{key}, token, poolLockTTL.Milliseconds())
					cancel()
				}
			}
		}()
		var once sync.Once
		return func() {
			once.Do(func() {
				close(stop)
				wg.Wait()
				// Under a context of its own: the task's may have ended.
				dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				dropLock.Run(dctx, rdb, []string{key}, token)
			})
		}, true, nil
	}
}
