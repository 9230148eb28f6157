package store

import (
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Location is a parsed store URL: Dir for file://, the rest for s3://.
type Location struct {
	// Dir is the absolute directory of a file:// store.
	Dir string
	// Bucket is the S3 bucket.
	Bucket string
	// Prefix is prepended to every key: empty, or ending with "/".
	Prefix string
	// Endpoint is the S3 server's base URL; empty means AWS S3.
	Endpoint string
	// Region signs requests; empty means the AWS config's, else us-east-1.
	Region string
	// PathStyle addresses the bucket in the path (http://host/bucket/key)
	// rather than the host name, as most self-hosted servers need.
	PathStyle bool
}

// String gives the location back as a URL, for logs; it never holds a
// secret, since ParseURL refuses URLs that carry one.
func (l Location) String() string {
	if l.Dir != "" {
		return (&url.URL{Scheme: "file", Path: l.Dir}).String()
	}
	q := url.Values{}
	if l.Endpoint != "" {
		q.Set("endpoint", l.Endpoint)
	}
	if l.Region != "" {
		q.Set("region", l.Region)
	}
	if l.PathStyle {
		q.Set("path_style", "true")
	}
	return (&url.URL{Scheme: "s3", Host: l.Bucket, Path: "/" + l.Prefix, RawQuery: q.Encode()}).String()
}

var (
	bucketName = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)
	// secretish matches query parameter names that look like credentials.
	secretish = regexp.MustCompile(`(?i)key|secret|token|pass|cred|sig|session|x-amz-`)
)

const credentialsHint = "credentials do not belong in the store URL: use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"

// ParseURL reads a store URL, file:///ABS/DIR or
// s3://BUCKET[/PREFIX][?endpoint=URL&region=R&path_style=true], without
// touching the file system or the network. Its errors are *ConfigError
// naming the part at fault, and never quote the URL.
func ParseURL(raw string) (Location, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Location{}, configErr("url", "not a valid URL (want file:///ABS/DIR or s3://BUCKET/PREFIX)")
	}
	if u.User != nil {
		return Location{}, configErr("url", "%s", credentialsHint)
	}
	if u.Fragment != "" || strings.HasSuffix(raw, "#") {
		return Location{}, configErr("url", "a store URL has no #fragment")
	}
	switch strings.ToLower(u.Scheme) {
	case "file":
		return parseFile(u)
	case "s3":
		return parseS3(u)
	case "":
		return Location{}, configErr("scheme", "missing (want file:///ABS/DIR or s3://BUCKET/PREFIX)")
	default:
		return Location{}, configErr("scheme", "%q is not file or s3", u.Scheme)
	}
}

func parseFile(u *url.URL) (Location, error) {
	if u.Opaque != "" || (u.Host != "" && u.Host != "localhost") || !filepath.IsAbs(u.Path) {
		return Location{}, configErr("dir", "a file URL needs an absolute path, as file:///ABS/DIR")
	}
	if u.RawQuery != "" || u.ForceQuery {
		return Location{}, configErr("url", "a file URL takes no query parameters")
	}
	return Location{Dir: filepath.Clean(u.Path)}, nil
}

func parseS3(u *url.URL) (Location, error) {
	var loc Location
	if u.Opaque != "" {
		return loc, configErr("bucket", "missing: write s3://BUCKET/PREFIX")
	}
	if u.Port() != "" {
		return loc, configErr("bucket", "a bucket name has no port; give the server as ?endpoint=http://HOST:PORT")
	}
	loc.Bucket = u.Host
	if loc.Bucket == "" {
		return loc, configErr("bucket", "missing: write s3://BUCKET/PREFIX")
	}
	if !bucketName.MatchString(loc.Bucket) || strings.Contains(loc.Bucket, "..") {
		return loc, configErr("bucket", "%q is not a valid bucket name (3-63 of a-z, 0-9, '.', '-')", loc.Bucket)
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if err := validPrefix(p); err != nil || strings.Contains(p, "//") {
			return loc, configErr("prefix", "%q is not a valid key prefix (no empty, '.' or '..' segments)", p)
		}
		loc.Prefix = p + "/"
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return loc, configErr("url", "the query is not valid URL encoding")
	}
	for name, vals := range q {
		switch name {
		case "endpoint", "region", "path_style":
		default:
			if secretish.MatchString(name) {
				return loc, configErr(name, "%s", credentialsHint)
			}
			return loc, configErr(name, "unknown parameter (want endpoint, region or path_style)")
		}
		if len(vals) != 1 {
			return loc, configErr(name, "given %d times", len(vals))
		}
	}
	if v, ok := q["endpoint"]; ok {
		e, err := url.Parse(v[0])
		switch {
		case err != nil || e.Host == "" || (e.Scheme != "http" && e.Scheme != "https"):
			return loc, configErr("endpoint", "want http://HOST[:PORT] or https://HOST[:PORT]")
		case e.User != nil:
			return loc, configErr("endpoint", "%s", credentialsHint)
		case (e.Path != "" && e.Path != "/") || e.RawQuery != "" || e.Fragment != "":
			return loc, configErr("endpoint", "want only a scheme, host and port, with no path or query")
		}
		loc.Endpoint = e.Scheme + "://" + e.Host
	}
	if v, ok := q["region"]; ok {
		if !regionName.MatchString(v[0]) {
			return loc, configErr("region", "%q is not a region name such as us-east-1", v[0])
		}
		loc.Region = v[0]
	}
	if v, ok := q["path_style"]; ok {
		b, err := strconv.ParseBool(v[0])
		if err != nil {
			return loc, configErr("path_style", "%q is not true or false", v[0])
		}
		loc.PathStyle = b
	}
	return loc, nil
}
