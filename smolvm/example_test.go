package smolvm_test

import (
	"fmt"
	"net/netip"

	"github.com/bot-bottle/bottleq/smolvm"
)

// A VM made from a pack takes the pack's resources and network unless
// create says otherwise, and what create can say depends on the release.
// Ask the release before setting an option: one it does not honour is
// refused with an error matching smolvm.ErrUnsupported. Where create cannot
// force something, read the machine back with Client.Status after create
// (Machine.CPUs, MemoryMiB, Network) and refuse what it got.
func ExampleVersion_Supports() {
	for _, v := range []smolvm.Version{{Major: 1, Minor: 7}, {Major: 1, Minor: 8}, {Major: 1, Minor: 9, Patch: 3}} {
		// In a program, v is Client.Version(): the release New detected.
		o := smolvm.CreateOptions{
			From: "/srv/packs/agent.smolmachine",
			// Not smolvm's defaults (4 CPUs, 8192 MiB): a --from create
			// with exactly those keeps the pack's values.
			CPUs:      2,
			MemoryMiB: 2048,
		}
		if v.Supports(smolvm.FeatureFromEgress) {
			// No egress, even from a pack whose manifest has network on.
			o.LocalhostOnly = true
		}
		if v.Supports(smolvm.FeatureDNS) {
			// smolvm forwards the guest's DNS queries from the host, past
			// the allow-list: send them to an address that answers
			// nothing (TEST-NET-1), so no name resolves.
			o.DNS = netip.MustParseAddr("192.0.2.1")
		}
		if v.Supports(smolvm.FeatureLabels) {
			o.Labels = map[string]string{"bottleq.io/deployment": "prod-1"}
		}
		fmt.Printf("%s: localhost-only=%v dns=%v labels=%v\n", v, o.LocalhostOnly, o.DNS.IsValid(), o.Labels != nil)
	}
	// Output:
	// 1.7.0: localhost-only=false dns=false labels=false
	// 1.8.0: localhost-only=true dns=false labels=true
	// 1.9.3: localhost-only=true dns=true labels=true
}
