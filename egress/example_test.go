package egress_test

import (
	"fmt"

	"github.com/bot-bottle/bottleq/egress"
)

func ExampleParseHost() {
	for _, s := range []string{"API.example.com", "*.example.com:443", "[2001:db8::1]:8443", "http://example.com"} {
		r, err := egress.ParseHost(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s wildcard=%v port=%d\n", r, r.Wildcard, r.Port)
	}
	// Output:
	// api.example.com wildcard=false port=0
	// *.example.com:443 wildcard=true port=443
	// [2001:db8::1]:8443 wildcard=false port=8443
	// allow_hosts: "http://example.com" is a URL; must be a host name, *.domain or IP address, optionally with :port
}

// A worker registers each task's policy when the task starts, gives its VM
// the proxy URL with the token, and unregisters when the task ends.
func ExampleProxy_Register() {
	p := egress.New(egress.Config{})
	token, err := p.Register("task-1", egress.Policy{Hosts: []string{"api.anthropic.com:443", "*.githubusercontent.com"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	env := map[string]string{"HTTPS_PROXY": egress.ProxyURL("http://10.0.2.2:3128", token)}
	fmt.Println(len(env["HTTPS_PROXY"]) == len("http://task:@10.0.2.2:3128")+32)
	rec := p.Unregister("task-1")
	fmt.Println(len(rec.Entries))
	// Output:
	// true
	// 0
}

func ExampleProxyURL() {
	fmt.Println(egress.ProxyURL("http://10.0.2.2:3128", "0123456789abcdef0123456789abcdef"))
	// Output: http://task:0123456789abcdef0123456789abcdef@10.0.2.2:3128
}
