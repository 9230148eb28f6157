package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// faultOps are the OP names accepted by SMOLVM_SIM_FAULTS and SMOLVM_SIM_DELAY.
var faultOps = []string{"pack", "pack-image", "pack-vm", "create", "start", "stop", "delete", "exec", "cp", "ls", "status", "*"}

// faultRule is one OP:WHEN:EXIT[:MESSAGE] rule.
type faultRule struct {
	op      string
	nth     int     // WHEN=N or N+
	orLater bool    // WHEN=N+
	prob    float64 // WHEN=pF
	isProb  bool
	exit    int
	msg     string
}

func parseFaults(s string) ([]faultRule, error) {
	var rules []faultRule
	for _, text := range strings.Split(s, ";") {
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		parts := strings.SplitN(text, ":", 4)
		if len(parts) < 3 {
			return nil, fmt.Errorf("rule %q: want OP:WHEN:EXIT[:MESSAGE]", text)
		}
		r := faultRule{op: parts[0]}
		if !slices.Contains(faultOps, r.op) {
			return nil, fmt.Errorf("rule %q: unknown op %q", text, r.op)
		}
		when := parts[1]
		var err error
		switch {
		case strings.HasPrefix(when, "p"):
			r.isProb = true
			r.prob, err = strconv.ParseFloat(when[1:], 64)
			if err == nil && (r.prob < 0 || r.prob > 1) {
				err = fmt.Errorf("probability out of [0,1]")
			}
		default:
			n, plus := strings.CutSuffix(when, "+")
			r.orLater = plus
			r.nth, err = strconv.Atoi(n)
			if err == nil && r.nth < 1 {
				err = fmt.Errorf("call numbers start at 1")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("rule %q: bad WHEN %q: %v", text, when, err)
		}
		if r.exit, err = strconv.Atoi(parts[2]); err != nil || r.exit < 0 || r.exit > 255 {
			return nil, fmt.Errorf("rule %q: bad EXIT %q", text, parts[2])
		}
		if len(parts) == 4 {
			r.msg = parts[3]
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// fires reports whether the rule hits call number n of its op.
func (r faultRule) fires(n int, seed *uint64, index int) bool {
	switch {
	case r.isProb:
		if seed == nil {
			return rand.Float64() < r.prob
		}
		// Deterministic per (seed, rule, call number) across processes.
		return rand.New(rand.NewPCG(*seed, uint64(n)<<16|uint64(index))).Float64() < r.prob
	case r.orLater:
		return n >= r.nth
	}
	return n == r.nth
}

func parseDelays(s string) (map[string]time.Duration, error) {
	delays := map[string]time.Duration{}
	for _, text := range strings.Split(s, ",") {
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		op, dur, ok := strings.Cut(text, "=")
		if !ok || !slices.Contains(faultOps, op) {
			return nil, fmt.Errorf("entry %q: want OP=DURATION with a known OP", text)
		}
		d, err := time.ParseDuration(dur)
		if err != nil {
			return nil, fmt.Errorf("entry %q: %v", text, err)
		}
		delays[op] = d
	}
	return delays, nil
}

// opKeys lists the rule ops matching op, most specific first.
func opKeys(op string) []string {
	if strings.HasPrefix(op, "pack-") {
		return []string{op, "pack", "*"}
	}
	return []string{op, "*"}
}

// gate applies the injected delay (outside the lock), counts the call and
// returns an injected fault if a rule fires. Commands call it after
// validating argv and before touching state.
func (a *app) gate(op string) error {
	keys := opKeys(op)
	for _, k := range keys {
		if d, ok := a.delays[k]; ok {
			time.Sleep(d)
			break
		}
	}
	st, err := a.openStore()
	if err != nil {
		return err
	}
	var counts map[string]int
	if err := st.locked(func() (err error) {
		counts, err = st.bump(keys)
		return err
	}); err != nil {
		return err
	}
	for i, r := range a.faults {
		if !slices.Contains(keys, r.op) || !r.fires(counts[r.op], a.seed, i) {
			continue
		}
		a.call.Fault = true
		msg := r.msg
		if msg == "" {
			msg = fmt.Sprintf("agent operation failed: injected fault (%s call %d)", op, counts[op])
		}
		return &faultError{code: r.exit, msg: msg}
	}
	return nil
}
