#pragma once
// Data parallelism (ZeRO stage 0): every rank holds the whole model and optimizer; gradients are summed
// over ranks in buckets, overlapped with the backward pass.
//
// Training step (every rank runs the same number of micro-steps and calls the same functions):
//
//   broadcast_parameters(*pg, params);                   // once, before the first step: rank 0's weights
//   GradientSync sync(pg, params, ddp_bucket_cap_mb << 20);
//   for each optimizer step:
//     for (int m = 0; m < accum; ++m) {
//       sync.set_sync(m == accum - 1);                   // no communication on the other micro-steps
//       loss_m.backward();                               // buckets are all-reduced as they fill up
//     }
//     sync.finish(scale);                                // waits; every .grad = scale * sum over ranks
//     ... clip, optimizer step (the same on every rank) ...
//     sync.zero_grad();                                  // zeroes the buckets (.grad stay bucket views)
//
// `scale` is the trainer's: 1 when each rank's loss is already divided by the token count of the whole
// optimizer step over all ranks (average_tokens_across_devices), 1/world_size when each rank averaged its own.
// The parameters' .grad are views into the bucket buffers: do not replace them (an optimizer that sets
// .grad to undefined works, at the cost of a copy on the next backward).
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "llava/dist/process_group.h"

namespace llava::dist {

namespace detail {
class GradReducer;
}

// Copies root's values of `params` to every rank (coalesced by dtype, in chunks of at most 64 MB).
void broadcast_parameters(ProcessGroup& pg, const std::vector<at::Tensor>& params, int root = 0);

class GradientSync {
 public:
  // params: the trainable parameters (leaves that require grad, contiguous, on pg->device()), in
  // registration order (model.parameters() order); their order fixes the buckets, so pass the same list on
  // every rank. bucket_cap_bytes: --ddp_bucket_cap_mb * 2^20. pg may be null (one process): nothing is sent,
  // the same calls work.
  GradientSync(std::shared_ptr<ProcessGroup> pg, std::vector<at::Tensor> params, size_t bucket_cap_bytes);
  ~GradientSync();

  // Before each backward: true on the last micro-step of an optimizer step (its buckets are reduced while
  // backward runs), false on the others (gradients only accumulate locally).
  void set_sync(bool sync);
  // After the last micro-step's backward: reduces whatever the hooks did not (e.g. parameters without a
  // gradient on this rank contribute zeros), waits for every bucket, multiplies by `scale`. Throws PeerError
  // when a peer is dead or hung.
  void finish(double scale = 1.0);
  void zero_grad();
  size_t num_buckets() const;

 private:
  std::unique_ptr<detail::GradReducer> reducer_;
};

}  // namespace llava::dist
