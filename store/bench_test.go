package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bot-bottle/bottleq/internal/teststore"
)

// BenchmarkS3Transfer compares the store's Put and Get of a 64 MiB file
// with the SDK's own calls for the same bytes to the same versitygw, one
// after the other in each round so that load on the machine hits both
// alike. It reports each as MB/s and the store's share of the SDK's:
//
//	go test -run '^$' -bench S3Transfer -benchtime 10x ./store
func BenchmarkS3Transfer(b *testing.B) {
	const size = 64 << 20
	srv := teststore.Start(b)
	ctx := context.Background()
	st, err := open(ctx, srv.URL(""), creds(srv))
	if err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(b.TempDir(), "src")
	f, err := os.Create(src)
	if err != nil {
		b.Fatal(err)
	}
	io.Copy(f, gen(1, size))
	f.Close()
	sum, _ := sumOf(b, gen(1, size))
	client := srv.Client()
	tm := transfermanager.New(client)
	bkt := aws.String(srv.Bucket)
	n := 0
	key := func() string { n++; return fmt.Sprintf("bench/%d", n) }
	get := key()
	if _, err := st.Put(ctx, get, gen(1, size), PutOptions{SHA256: sum}); err != nil {
		b.Fatal(err)
	}
	ways := []struct {
		name string
		run  func() error
	}{
		{"put-raw-PutObject", func() error {
			f, _ := os.Open(src)
			defer f.Close()
			_, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: bkt, Key: aws.String(key()), Body: f})
			return err
		}},
		{"put-raw-transfermanager", func() error {
			f, _ := os.Open(src)
			defer f.Close()
			_, err := tm.UploadObject(ctx, &transfermanager.UploadObjectInput{Bucket: bkt, Key: aws.String(key()), Body: f})
			return err
		}},
		{"put-store-file", func() error {
			f, _ := os.Open(src)
			defer f.Close()
			_, err := st.Put(ctx, key(), f, PutOptions{})
			return err
		}},
		{"put-store-stream-digest", func() error {
			f, _ := os.Open(src)
			defer f.Close()
			_, err := st.Put(ctx, key(), onlyReader{f}, PutOptions{SHA256: sum})
			return err
		}},
		{"get-raw-GetObject", func() error {
			out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: bkt, Key: aws.String(get)})
			if err != nil {
				return err
			}
			defer out.Body.Close()
			_, err = io.Copy(io.Discard, out.Body)
			return err
		}},
		{"get-raw-GetObject+sha256", func() error {
			out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: bkt, Key: aws.String(get)})
			if err != nil {
				return err
			}
			defer out.Body.Close()
			h := sha256.New()
			_, err = io.Copy(h, out.Body)
			return err
		}},
		{"get-store", func() error {
			rc, _, err := st.Get(ctx, get)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(io.Discard, rc)
			return err
		}},
	}
	spent := make([]time.Duration, len(ways))
	for range b.N {
		for i, w := range ways {
			t0 := time.Now()
			if err := w.run(); err != nil {
				b.Fatalf("%s: %v", w.name, err)
			}
			spent[i] += time.Since(t0)
		}
	}
	mbps := func(i int) float64 { return float64(size) * float64(b.N) / spent[i].Seconds() / 1e6 }
	for i, w := range ways {
		b.ReportMetric(mbps(i), w.name+"-MB/s")
	}
	b.ReportMetric(mbps(2)/mbps(0), "put-file/raw")
	b.ReportMetric(mbps(3)/mbps(0), "put-stream/raw")
	b.ReportMetric(mbps(6)/mbps(4), "get/raw")
	b.ReportMetric(mbps(6)/mbps(5), "get/raw+sha256")
	b.ReportMetric(mbps(3)/mbps(1), "put-stream/raw-multipart")
}
