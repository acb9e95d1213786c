#pragma once
// GradReducer: the gradient buckets that GradientSync (DDP) and ZeroOptimizer share.
//
// Buckets are filled in reverse registration order (the order backward produces gradients), at most
// `cap_bytes` each (a larger parameter gets a bucket of its own), one dtype per bucket, each padded to a
// multiple of `shards` elements and split into `shards` equal parts: part k belongs to shard k (ZeRO).
//
// A post-hook on every parameter's AccumulateGrad node marks it ready once its gradient is accumulated;
// a bucket whose parameters are all ready is reduced asynchronously right away -- strictly in bucket order,
// so every rank issues the same sequence of collectives even when some parameter gets no gradient on some
// rank (a text-only batch leaves the projector without one): such buckets go out in finish().
//
//   AllReduce:     the parameters' .grad are views into persistent bucket buffers (no copy, accumulation
//                  micro-steps add into them in place); the bucket is all-reduced in place.
//   ReduceScatter: .grad is left to autograd; at reduction the gradient is copied into a bucket buffer that
//                  exists only while the bucket is in flight, .grad is released, and the bucket is
//                  reduce-scattered; this rank keeps only its part, accumulated in fp32. At most two buckets
//                  are in flight (launching a third first retires the oldest), so the full gradient never
//                  exists at once.
// With set_sync(false) nothing is communicated: gradients accumulate locally (in .grad), and the next
// sync backward (or finish()) reduces the sum.
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>

#include "llava/dist/process_group.h"

namespace llava::dist::detail {

struct BucketSlot {
  size_t param = 0;    // index into the parameter list
  int64_t offset = 0;  // first element in the bucket
  int64_t numel = 0;
};

struct Bucket {
  std::vector<BucketSlot> slots;  // in bucket order (offsets increasing)
  int64_t numel = 0;              // sum of the slots
  int64_t padded = 0;             // numel rounded up to a multiple of the shard count
  int64_t part = 0;               // padded / shards
  at::ScalarType dtype = at::kFloat;
};

std::vector<Bucket> make_buckets(const std::vector<at::Tensor>& params, size_t cap_bytes, int shards);

class GradReducer {
 public:
  enum class Mode { AllReduce, ReduceScatter };
  // pg may be null (one process): AllReduce mode then only keeps the bucket views, nothing is sent.
  // shards: 1, or pg->world_size() for ZeRO (this rank's part is number pg->rank()).
  GradReducer(std::shared_ptr<ProcessGroup> pg, std::vector<at::Tensor> params, size_t cap_bytes, Mode mode,
              int shards);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  void set_sync(bool sync);
  bool sync() const;
  // Reduces what the hooks have not, waits for everything. Afterwards (AllReduce) every .grad holds the sum
  // over ranks; (ReduceScatter) grad_part() holds this rank's part of that sum, .grad is released.
  void finish();
  void scale(double factor);  // multiplies the reduced gradients
  void zero_grad();

  const std::vector<Bucket>& buckets() const;
  int shards() const;
  int shard_rank() const;
  // This rank's part of bucket b's reduced gradient: AllReduce, a view of the bucket buffer (parameter dtype);
  // ReduceScatter, the fp32 accumulator. `part` elements.
  at::Tensor grad_part(size_t b) const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace llava::dist::detail
