package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bot-bottle/bottleq/store"
	"github.com/bot-bottle/bottleq/tasks"
)

// objSize is the size of everything the store scenario moves: the bytes of
// the throughput rounds, each image pack, each commit. Real packs and
// commits are hundreds of MB.
const objSize = 256 << 20

func objStore(ctx context.Context, b *bench) (section, error) {
	s := section{method: `A real versitygw (scripts/ensure-versitygw; the scenario fails if it cannot be installed) on loopback,
its buckets on the same disk as everything else. Every object is 256 MiB of pseudo-random bytes.
**(a) Throughput**: in each of R rounds, one after the other in an order that alternates between rounds, (1) the
store's Put of an open 256 MiB file with no digest given — it reads the file once for its SHA-256 and again to upload it,
multipart through the SDK's transfer manager with If-None-Match, as the worker uploads a commit — (2) the raw SDK's
s3.PutObject of the same file, one request, (3) the raw SDK's transfermanager.UploadObject of the same file (what the
store uploads with, without its digest pass and checks), (4) the store's Get of the object (1) stored, read to the end
into io.Discard, its SHA-256 checked, (5) the raw SDK's s3.GetObject of the same object, read the same way, with the SDK's
default settings; and three reference ways, not compared against: a SHA-256 pass added to (3) and to (5), and a SHA-256 of 256 MiB already in memory (the digest alone, the ceiling of any Get that checks one). MB/s = 268.4 MB × R ÷ the summed time of each way; the ratios are the store's MB/s over the raw SDK's.
**(b) Shared pack**: two worker processes, each a host of its own (own -host, data directory, simulator state, queue),
both with -store on the bucket; the simulator runs with SMOLVM_SIM_PACK_BYTES so that an image pack is 256 MiB (without
it, its pack is a few hundred bytes) and no pack delay, so host 1's pack time is only the simulator writing the file —
a real smolvm also pulls and converts the image. Per round, a task of a new image on host 1 (pack_source must be
"packed": pack create, SHA-256, upload), then a task of the same image on host 2 (pack_source must be "store": list,
download, SHA-256). Compared: the **"pack" phase of each task's result**, p50 over the rounds.
**(c) from: task:ID**: per round, a task on host 1 writes 256 MiB of /dev/urandom into its guest and commits (its commit
is about 256 MiB); then on host 2 a task from: task:ID of it (cold: host 2's cache has no copy, checked before it runs,
so it downloads it), then a second one (warm: the copy is in host 2's cache, checked). Compared: the "pack" phase of the
cold and the warm task (reading the commit's owner record, then downloading the commit or leasing the cached copy), p50
over the rounds; **added time = cold p50 − warm p50**. The rest of either task (create, which copies the commit's files,
start, exec) is the same whichever host runs it.`}
	rounds := b.n(5, 2)

	srv, err := startS3(ctx, b.mkdir("versitygw"), "bench-store")
	if err != nil {
		return s, fmt.Errorf("no S3 server for the store scenario: %w", err)
	}
	defer srv.stop()
	b.logf("  versitygw on %s", srv.endpoint)
	// The harness's own store client finds its credentials as the
	// worker's does, in the environment.
	restore := setEnv(srv.env(b.dir))
	defer restore()

	if err := b.storeThroughput(ctx, &s, srv, rounds); err != nil {
		return s, err
	}

	poolURL := srv.url("pool")
	env := append(srv.env(b.dir), "SMOLVM_SIM_PACK_BYTES="+strconv.Itoa(objSize))
	var hosts [2]*storeHost
	for i := range hosts {
		h := &storeHost{name: fmt.Sprintf("bench-host-%d", i+1), queue: b.uniq(fmt.Sprintf("store-h%d", i+1))}
		h.data = b.mkdir(h.queue + "-data")
		if _, err := b.startWorker(ctx, workerOpts{queue: h.queue, concurrency: 2, dataDir: h.data, simState: b.mkdir(h.queue + "-sim"),
			env: env, args: []string{"-store", poolURL, "-host", h.name}}); err != nil {
			return s, err
		}
		hosts[i] = h
	}
	if err := b.sharedPack(ctx, &s, hosts, rounds); err != nil {
		return s, err
	}
	return s, b.fromTaskCold(ctx, &s, hosts, rounds)
}

// storeHost is one worker host of the store scenario.
type storeHost struct {
	name, queue, data string
	done              int // tasks completed on its queue
}

// setEnv sets kvs (KEY=VALUE) in this process's environment, for the AWS
// chain of the harness's own store client, and returns what undoes it.
func setEnv(kvs []string) (restore func()) {
	var undo []func()
	for _, kv := range kvs {
		k, v, _ := strings.Cut(kv, "=")
		old, had := os.LookupEnv(k)
		os.Setenv(k, v)
		undo = append(undo, func() {
			if had {
				os.Setenv(k, old)
			} else {
				os.Unsetenv(k)
			}
		})
	}
	return func() {
		for _, u := range undo {
			u()
		}
	}
}

// storeThroughput is part (a): the store's Put and Get against the raw
// SDK's, interleaved.
func (b *bench) storeThroughput(ctx context.Context, s *section, srv *s3Server, rounds int) error {
	src := filepath.Join(b.dir, "store-src")
	if err := writeRandom(src, objSize, 1); err != nil {
		return err
	}
	defer os.Remove(src)
	st, err := store.Open(ctx, srv.url("tput"))
	if err != nil {
		return err
	}
	client := srv.client()
	tm := transfermanager.New(client)
	mem := make([]byte, 16<<20) // hashed objSize/len(mem) times by the digest-alone way
	if _, err := io.ReadFull(rand.NewChaCha8([32]byte{2}), mem); err != nil {
		return err
	}
	bkt := aws.String(srv.bucket)
	var stored string // the key (1) stored this round, read by (4) and (5)
	seq := 0
	ways := []struct {
		name string
		run  func() error
	}{
		{"store Put", func() error {
			seq++
			stored = fmt.Sprintf("round-%d", seq)
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			obj, err := st.Put(ctx, stored, f, store.PutOptions{})
			if err == nil && obj.Size != objSize {
				err = fmt.Errorf("stored %d bytes, want %d", obj.Size, objSize)
			}
			return err
		}},
		{"raw s3.PutObject", func() error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = client.PutObject(ctx, &s3.PutObjectInput{Bucket: bkt, Key: aws.String("raw/put"), Body: f})
			return err
		}},
		{"raw transfermanager.UploadObject", func() error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: bkt, Key: aws.String("raw/tm"), Body: f})
			return err
		}},
		{"store Get", func() error {
			rc, _, err := st.Get(ctx, stored)
			if err != nil {
				return err
			}
			defer rc.Close()
			return readAll(rc)
		}},
		{"raw s3.GetObject", func() error {
			out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: bkt, Key: aws.String("tput/" + stored)})
			if err != nil {
				return err
			}
			defer out.Body.Close()
			return readAll(out.Body)
		}},
		{"raw s3.GetObject + SHA-256 of the bytes (reference)", func() error {
			out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: bkt, Key: aws.String("tput/" + stored)})
			if err != nil {
				return err
			}
			defer out.Body.Close()
			h := sha256.New()
			n, err := io.Copy(h, out.Body)
			if err == nil && n != objSize {
				err = fmt.Errorf("read %d bytes, want %d", n, objSize)
			}
			return err
		}},
		{"SHA-256 of 256 MiB already in memory, one core, no I/O (reference: the digest alone)", func() error {
			h := sha256.New()
			for range objSize / len(mem) {
				h.Write(mem)
			}
			return nil
		}},
		{"raw SHA-256 pass over the file, then transfermanager.UploadObject (reference)", func() error {
			f, err := os.Open(src)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(sha256.New(), f); err != nil {
				return err
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return err
			}
			_, err = tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: bkt, Key: aws.String("raw/tm"), Body: f})
			return err
		}},
	}
	spent := make([]time.Duration, len(ways))
	for r := range rounds {
		b.logf("  throughput round %d of %d", r+1, rounds)
		// Puts before Gets (the Gets read what the store's Put stored);
		// within each, the order flips every round.
		order := [][]int{{0, 1, 2, 7}, {3, 4, 5, 6}}
		if r%2 == 1 {
			order = [][]int{{7, 2, 1, 0}, {6, 5, 4, 3}}
		}
		for _, group := range order {
			for _, i := range group {
				t0 := time.Now()
				if err := ways[i].run(); err != nil {
					return fmt.Errorf("%s: %w", ways[i].name, err)
				}
				spent[i] += time.Since(t0)
			}
		}
		if err := st.Delete(ctx, stored); err != nil {
			return err
		}
	}
	mbps := func(i int) float64 { return float64(objSize) * float64(rounds) / spent[i].Seconds() / 1e6 }
	up, upRaw, upTM, get, getRaw := mbps(0), mbps(1), mbps(2), mbps(3), mbps(4)
	s.goal(fmt.Sprintf("(a) upload, store Put vs raw s3.PutObject, 256 MiB (R=%d)", rounds),
		fmt.Sprintf("%.0f vs %.0f MB/s: ratio %.2f", up, upRaw, up/upRaw), "≥ 0.9", up/upRaw >= 0.9)
	s.goal(fmt.Sprintf("(a) upload, store Put vs raw transfermanager.UploadObject, 256 MiB (R=%d)", rounds),
		fmt.Sprintf("%.0f vs %.0f MB/s: ratio %.2f", up, upTM, up/upTM), "≥ 0.9", up/upTM >= 0.9)
	s.goal(fmt.Sprintf("(a) download, store Get vs raw s3.GetObject, 256 MiB (R=%d)", rounds),
		fmt.Sprintf("%.0f vs %.0f MB/s: ratio %.2f (the SHA-256 it must check, alone: %.2f)", get, getRaw, get/getRaw, mbps(6)/getRaw), "≥ 0.9", get/getRaw >= 0.9)
	s.detail("| (a) way | MB/s | mean time per 256 MiB |\n|---|---|---|")
	for i, w := range ways {
		s.detail("| %s | %.0f | %s |", w.name, mbps(i), ms(msDur(spent[i])/float64(rounds)))
	}
	s.detail("\nThe reference rows do by hand the work the store adds to the SDK's calls — a SHA-256 of the bytes, checked on the way out and in — to show how much of a gap is that digest (the raw s3.GetObject checks no checksum of a multipart object). "+
		"A SHA-256 is one sequential pass: a Get that checks one cannot finish before the digest of its bytes does, so however the hashing overlaps the reading, the store's Get can reach at most %.0f MB/s (the digest alone) = %.2f× the raw GetObject on this machine, and less where the digest shares its cores with the S3 server.",
		mbps(6), mbps(6)/getRaw)
	return nil
}

// writeRandom writes n pseudo-random bytes from seed to path.
func writeRandom(path string, n int64, seed byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.CopyN(f, rand.NewChaCha8([32]byte{seed}), n)
	return errors.Join(err, f.Close())
}

// readAll reads r to its end into io.Discard and checks the count.
func readAll(r io.Reader) error {
	n, err := io.Copy(io.Discard, r)
	if err == nil && n != objSize {
		err = fmt.Errorf("read %d bytes, want %d", n, objSize)
	}
	return err
}

// runOn enqueues p on host h, waits for it and returns its result, which
// must be done with exit 0.
func (b *bench) runOn(ctx context.Context, h *storeHost, p tasks.AgentRun) (string, tasks.Result, error) {
	id, err := b.enqueue(h.queue, p)
	if err != nil {
		return "", tasks.Result{}, err
	}
	if _, err := b.waitCompleted(ctx, h.queue, h.done, 1, 5*time.Minute); err != nil {
		return id, tasks.Result{}, err
	}
	h.done++
	r, ok, err := b.result(ctx, h.queue, id)
	switch {
	case err != nil:
		return id, r, err
	case !ok || r.State != tasks.StateDone || r.ExitCode != 0:
		return id, r, fmt.Errorf("task %s on %s: not done with exit 0 (state %s, error %+v)", id, h.name, r.State, r.Error)
	}
	return id, r, nil
}

// sharedPack is part (b): host 1 packs and uploads, host 2 downloads.
func (b *bench) sharedPack(ctx context.Context, s *section, hosts [2]*storeHost, rounds int) error {
	var first, second []float64
	for r := range rounds {
		img := b.uniq("bench/shared") + ":1"
		b.logf("  shared pack round %d of %d: %s", r+1, rounds, img)
		p := payload(img)
		p.Commit = tasks.Bool(false)
		for i, want := range []string{tasks.PackSourcePacked, tasks.PackSourceStore} {
			_, res, err := b.runOn(ctx, hosts[i], p)
			if err != nil {
				return err
			}
			if res.PackSource != want {
				return fmt.Errorf("%s's task of %s: pack_source %q, want %q", hosts[i].name, img, res.PackSource, want)
			}
			d := phaseSeconds(res, tasks.PhasePack) * 1000
			if i == 0 {
				first = append(first, d)
			} else {
				second = append(second, d)
			}
		}
	}
	p1, p2 := percentile(first, 50), percentile(second, 50)
	s.add(fmt.Sprintf("(b) pack phase p50, host 1: pack 256 MiB + upload (pack_source packed, N=%d)", rounds), ms(p1))
	s.add(fmt.Sprintf("(b) pack phase p50, host 2: download 256 MiB (pack_source store, N=%d)", rounds),
		fmt.Sprintf("%s (%.2f × host 1's)", ms(p2), p2/p1))
	s.detail("\n| (b) round | host 1 pack phase (packed) | host 2 pack phase (store) |\n|---|---|---|")
	for i := range first {
		s.detail("| %d | %s | %s |", i+1, ms(first[i]), ms(second[i]))
	}
	return nil
}

// fromTaskCold is part (c): from: task:ID on a host without the commit and
// on one with it in its cache.
func (b *bench) fromTaskCold(ctx context.Context, s *section, hosts [2]*storeHost, rounds int) error {
	var cold, warm, commitPhase []float64
	for r := range rounds {
		b.logf("  from: task round %d of %d", r+1, rounds)
		mk := payload(image, "sh", "-c", fmt.Sprintf("head -c %d /dev/urandom > blob", objSize))
		id, res, err := b.runOn(ctx, hosts[0], mk)
		if err != nil {
			return err
		}
		if res.CommitKey == "" {
			return fmt.Errorf("task %s on %s: no commit key in its result", id, hosts[0].name)
		}
		commitPhase = append(commitPhase, phaseSeconds(res, tasks.PhaseCommit)*1000)
		copyOn2 := filepath.Join(hosts[1].data, "cache", filepath.FromSlash(res.CommitKey))
		from := tasks.AgentRun{From: tasks.FromTaskPrefix + id, Command: []string{"test", "-s", "blob"}, Commit: tasks.Bool(false)}
		for _, isCold := range []bool{true, false} {
			_, err := os.Stat(copyOn2)
			if had := err == nil; had == isCold {
				return fmt.Errorf("before the %s task of round %d, %s's cache holds the commit: %v (want %v)", map[bool]string{true: "cold", false: "warm"}[isCold], r+1, hosts[1].name, had, !isCold)
			}
			_, res, err := b.runOn(ctx, hosts[1], from)
			if err != nil {
				return err
			}
			if res.PackSource != tasks.PackSourceCommit {
				return fmt.Errorf("from task: pack_source %q, want %q", res.PackSource, tasks.PackSourceCommit)
			}
			d := phaseSeconds(res, tasks.PhasePack) * 1000
			if isCold {
				cold = append(cold, d)
			} else {
				warm = append(warm, d)
			}
		}
	}
	c50, w50 := percentile(cold, 50), percentile(warm, 50)
	s.add(fmt.Sprintf("(c) from: task:ID, pack phase p50, cold host (downloads the 256 MiB commit, N=%d)", rounds), ms(c50))
	s.add(fmt.Sprintf("(c) from: task:ID, pack phase p50, warm host (commit in its cache, N=%d)", rounds), ms(w50))
	s.add("(c) added time of from: task:ID on a cold host (cold p50 − warm p50)", ms(c50-w50))
	s.detail("\n| (c) round | host 1 commit phase (pack --from-vm + upload) | host 2 pack phase, cold | host 2 pack phase, warm |\n|---|---|---|---|")
	for i := range cold {
		s.detail("| %d | %s | %s | %s |", i+1, ms(commitPhase[i]), ms(cold[i]), ms(warm[i]))
	}
	return nil
}
