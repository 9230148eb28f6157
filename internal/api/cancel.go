package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/bot-bottle/bottleq/enqueue"
	"github.com/bot-bottle/bottleq/internal/cancelmark"
)

// cancelRun cancels a run for good with enqueue's Cancel: a run waiting to
// run is archived at once, a running one is cancelled through asynq and
// its worker deletes the VM. It answers 200 with the cancelled run, or 202
// with the run as it is when it has not ended within Config.CancelWait
// (the cancel stands; the run ends cancelled when its worker gets to it).
func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request, g Grant) {
	ri, e := s.lookup(r.Context(), g, r.PathValue("id"))
	if e != nil {
		writeError(w, e)
		return
	}
	switch ri.State {
	case StateCancelled:
		writeJSON(w, http.StatusOK, ri.Run)
		return
	case StateCompleted, StateArchived:
		writeError(w, errorf(http.StatusConflict, CodeFinished, "", fmt.Sprintf("run %s already ended (%s): nothing to cancel", ri.ID, ri.State)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CancelWait)
	defer cancel()
	_, err := s.enq.Cancel(ctx, ri.Queue, ri.ID)
	status := http.StatusOK
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		// The cancel stands only if Cancel got as far as its mark.
		by, merr := cancelmark.Get(context.WithoutCancel(r.Context()), s.rdb, ri.Queue, ri.ID)
		if merr != nil || by == "" {
			writeError(w, errRedis(err))
			return
		}
		status = http.StatusAccepted
	case errors.Is(err, enqueue.ErrFinished):
		writeError(w, errorf(http.StatusConflict, CodeFinished, "", fmt.Sprintf("run %s completed before the cancel reached it", ri.ID)))
		return
	case errors.Is(err, enqueue.ErrNotFound):
		writeError(w, errNoRun(ri.ID))
		return
	default:
		s.cfg.Log.Error().Err(err).Str("run_id", ri.ID).Msg("cancel failed")
		writeError(w, errRedis(err))
		return
	}
	now, found, err := s.read(context.WithoutCancel(r.Context()), ri.Queue, ri.ID)
	switch {
	case err != nil:
		writeError(w, errRedis(err))
	case !found:
		writeError(w, errNoRun(ri.ID))
	default:
		writeJSON(w, status, now.Run)
	}
}
