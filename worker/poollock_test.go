package worker

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// TestRedisPoolLock: one holder at a time per name; unlock frees it; a
// holder that stops renewing (a killed worker) loses it once its time to
// live passes, and its late unlock leaves the next holder's lock alone.
func TestRedisPoolLock(t *testing.T) {
	t.Parallel()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	lock := RedisPoolLock(rdb)
	ctx := context.Background()
	try := func(who string) (func(), bool) {
		t.Helper()
		unlock, ok, err := lock(ctx, "packs/img-1")
		if err != nil {
			t.Fatalf("%s: %v", who, err)
		}
		return unlock, ok
	}

	unlockA, ok := try("A")
	if !ok {
		t.Fatal("A did not get a free lock")
	}
	if _, ok := try("B"); ok {
		t.Fatal("B got A's lock")
	}
	if _, ok, _ := lock(ctx, "packs/img-2"); !ok {
		t.Error("another name's lock is taken too")
	}
	m.FastForward(poolLockTTL / 2)
	if _, ok := try("B"); ok {
		t.Fatal("B got A's lock before its time to live passed")
	}
	unlockA()
	unlockB, ok := try("B")
	if !ok {
		t.Fatal("B did not get the lock A released")
	}

	// B dies: nothing renews its lock (the renewal runs on real time,
	// which this test does not give it).
	m.FastForward(poolLockTTL + time.Second)
	unlockC, ok := try("C")
	if !ok {
		t.Fatal("C did not get the lock of a holder that stopped renewing")
	}
	unlockB() // too late: C's lock must stay
	if _, ok := try("D"); ok {
		t.Error("B's late unlock released C's lock")
	}
	unlockC()
	if _, ok := try("D"); !ok {
		t.Error("D did not get the lock C released")
	}
}

// TestRedisPoolLockRenewed: a holder that lives keeps its lock past the
// time to live, renewed while it holds it.
func TestRedisPoolLockRenewed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a renewal")
	}
	t.Parallel()
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	unlock, ok, err := RedisPoolLock(rdb)(context.Background(), "packs/img-1")
	if err != nil || !ok {
		t.Fatalf("lock: %v, %v", ok, err)
	}
	defer unlock()
	key := poolLockPrefix + "packs/img-1"
	m.FastForward(poolLockTTL - poolLockTTL/4) // miniredis's clock: a quarter left
	time.Sleep(poolLockTTL/3 + time.Second)    // one renewal, on the real clock
	if ttl := m.TTL(key); ttl <= poolLockTTL/4 {
		t.Errorf("time to live %v after a renewal is due: not renewed (want %v)", ttl, poolLockTTL)
	}
}
