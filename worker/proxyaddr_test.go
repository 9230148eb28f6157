package worker

import "testing"

func TestParseProxyAddr(t *testing.T) {
	t.Parallel()
	for in, ok := range map[string]bool{
		"http://10.0.0.1:3128": true, "http://[fd00::1]:8080": true,
		"https://10.0.0.1:3128": false, "http://proxy.local:3128": false, "http://10.0.0.1": false,
		"http://u:p@10.0.0.1:1": false, "10.0.0.1:3128": false, "http://10.0.0.1:99999": false,
	} {
		if _, err := ParseProxyAddr(in); (err == nil) != ok {
			t.Errorf("ParseProxyAddr(%q) = %v, want ok=%v", in, err, ok)
		}
	}
}
