// Compute pacing: launches are held while the slice has used more GPU time than
// its share over a 100 ms window. GPU time is measured, not counted: an event is
// recorded on the launch's stream just before and just after each launch, and
// the elapsed time between them (when both have completed) is drawn from a
// token bucket shared by all the slice's processes (in its region). The bucket
// refills at `share` GPU-ns per wall-ns, up to share x window.
//
// Timing events belong to a context, and an event can only be recorded on a
// stream of its own context: the pacer keeps spare events per context (the one
// current at the launch) and forgets a context's events when it is destroyed.
// Its mutex guards the bucket bookkeeping only: it is not held across the real
// launch, nor while waiting for a kernel to finish, so launching threads do not
// serialise on it. Thread-safe; init_pacing() runs once under init().
#ifndef APT_VGPU_INTERCEPT_PACING_HPP
#define APT_VGPU_INTERCEPT_PACING_HPP

#include "cuda_driver_api.h"

namespace vgpu_cuda {

// Resolves the event API and joins the GPU's pacing region; false (logged) when the driver cannot pace.
bool init_pacing();

// What pace_before() set up for one launch, for pace_after().
struct PacedLaunch {
  CUevent start = nullptr;
  CUevent end = nullptr;
  CUcontext context = nullptr;
  CUresult (*record)(CUevent, CUstream) = nullptr;
};

// Waits for budget, then records the start event (none for a stream being captured).
PacedLaunch pace_before(CUstream stream);
// Records the end event and queues the pair to be measured.
void pace_after(const PacedLaunch& launch, CUstream stream);

template <class Launch>
CUresult paced(CUstream stream, Launch&& launch) {
  const PacedLaunch ticket = pace_before(stream);
  const CUresult rc = launch();
  pace_after(ticket, stream);
  return rc;
}

// `context` was destroyed: its events went with it.
void forget_context_events(CUcontext context);

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_PACING_HPP
