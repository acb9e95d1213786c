#pragma once
// GradReducer: the step's gradient summed over ranks, in buckets launched from gradient hooks during backward
// (PyTorch DDP's Reducer, in two modes). The trainer's Optimizer owns one; tests use it directly.
//
// Buckets are filled in reverse registration order (the order backward produces gradients), at most
// `cap_bytes` each (a larger parameter gets a bucket of its own), one dtype and one owner per bucket.
// A post-hook on every parameter's AccumulateGrad node marks it ready once its gradient is accumulated; a
// bucket whose parameters are all ready is reduced asynchronously right away -- strictly in bucket order, so
// every rank issues the same sequence of collectives even when some parameter gets no gradient on some rank
// (a text-only batch leaves the projector without one): such buckets go out in finish().
//
//   AllReduce      every rank ends with the whole summed gradient. The parameters' .grad are views into
//                  persistent bucket buffers (no copy; accumulation micro-steps add into them in place), each
//                  bucket is all-reduced in place. (Stage 0 and 1; one process: nothing is sent.)
//   ReduceToOwner  each parameter has an owner rank (ZeRO-2); a bucket holds one owner's parameters and is
//                  reduced to that rank only. .grad is left to autograd until the bucket is launched: then it
//                  is copied into a bucket buffer that exists only while the bucket is in flight, and released.
//                  At most two buckets are in flight, so the full gradient never exists at once.
//
// Accumulators: a parameter may be given an fp32 accumulator (bf16 parameters, so gradients add up in fp32;
// every owned parameter in ReduceToOwner mode). Its reduced gradient is then added into the accumulator (and
// the bucket slot cleared) when the reduction completes; without one (fp32 parameters, AllReduce) the .grad
// view itself is the reduced gradient.
// With set_sync(false) nothing is communicated: gradients accumulate locally (in .grad), and the next sync
// backward (or finish()) reduces the sum.
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "llava/dist/process_group.h"

namespace llava::dist {

struct BucketSlot {
  size_t param = 0;    // index into the parameter list
  int64_t offset = 0;  // first element in the bucket
  int64_t numel = 0;
};

struct Bucket {
  std::vector<BucketSlot> slots;  // in bucket order (offsets increasing)
  int64_t numel = 0;              // sum of the slots
  at::ScalarType dtype = at::kFloat;
  int owner = -1;                 // ReduceToOwner: the rank it is reduced to; -1: every rank (AllReduce)
};

// owner[i] per parameter (-1 = every rank); a bucket never mixes owners or dtypes.
std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& params, const std::vector<int>& owner,
                                 size_t cap_bytes);

class GradReducer {
 public:
  enum class Mode { AllReduce, ReduceToOwner };
  // params: leaves that require grad, contiguous, on pg->device(), the same list on every rank.
  // owner: per parameter (ReduceToOwner: each in [0, world)); ignored (every rank) in AllReduce mode.
  // accumulators: per parameter, undefined or an fp32 tensor of the parameter's shape (see above);
  // ReduceToOwner needs one for every parameter this rank owns. pg may be null (one process, AllReduce).
  GradReducer(std::shared_ptr<ProcessGroup> pg, std::vector<at::Tensor> params, std::vector<int> owner,
              std::vector<at::Tensor> accumulators, size_t cap_bytes, Mode mode);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  void set_sync(bool sync);
  // Reduces what the hooks have not, waits for everything, moves reduced gradients into the accumulators.
  // Throws PeerError when a peer is dead or hung.
  void finish();
  void zero_grad();  // gradients, bucket buffers and accumulators back to zero

  const std::vector<Bucket>& buckets() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace llava::dist
