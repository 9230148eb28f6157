package worker

// activeVMs returns the names of the VMs this handler is using now.
func (h *Handler) activeVMs() map[string]bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]bool, len(h.active))
	for k := range h.active {
		out[k] = true
	}
	return out
}

// busyError is a VM name taken by another live delivery of the same task
// attempt. The attempt fails and is retried later under a new name; the
// other delivery's VM is left alone.
type busyError struct {
	// VM is the machine the other delivery uses.
	VM string
}

// Error says whose the machine is and that the attempt will be retried.
func (e *busyError) Error() string {
	return "machine " + e.VM + " is in use by another live delivery of this task; retrying later"
}

// users counts this process's deliveries using vm.
func (h *Handler) users(vm string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.active[vm]
}

// own registers (on) or releases a delivery's use of vm. The reaper spares
// a registered VM, and a second delivery of the same attempt in this process
// finds it busy. The last release lets go of the cache leases held for it.
func (h *Handler) own(vm string, on bool) {
	h.mu.Lock()
	var done []*lease
	if on {
		h.active[vm]++
	} else if h.active[vm]--; h.active[vm] <= 0 {
		delete(h.active, vm)
		done = h.holds[vm]
		delete(h.holds, vm)
	}
	h.mu.Unlock()
	for _, l := range done {
		l.Release()
	}
}

// holdWhileOwned keeps l, the lease on the pack vm is made from, until the
// last own(vm, false): a warm pool VM's pack stays in the cache while the
// VM lives, in the pool or in the task that claims it.
func (h *Handler) holdWhileOwned(vm string, l *lease) {
	if l == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.active[vm] == 0 {
		l.Release() // no longer owned
		return
	}
	h.holds[vm] = append(h.holds[vm], l)
}

// vms tells the VMs hook that a VM of this worker was created (+1) or
// is no longer its own (-1).
func (h *Handler) vms(delta int) {
	if h.cfg.Hooks.VMs != nil {
		h.cfg.Hooks.VMs(delta)
	}
}
