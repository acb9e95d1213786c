#pragma once
// Which samples each rank sees, batch by batch, in each epoch. Deterministic for a seed: the order does
// not depend on the number of loader workers, and a resumed run recomputes the same batches.
//
// Sharding: the epoch's order is cut into global batches of world_size x batch_size samples; within a
// global batch, rank r takes the r-th slice (HF/accelerate batch sharding), so a run on W ranks with
// batch B sees exactly the samples of a 1-rank run with batch W x B, step for step.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <ostream>
#include <vector>

namespace llava {

struct SamplerOptions {
  uint64_t seed = 42;
  bool shuffle = true;                    // false: file order (SequentialSampler)
  bool group_by_modality_length = false;  // LLaVA's LengthGroupedSampler(group_by_modality=True)
  int batch_size = 1;                     // per device
  int world_size = 1;
  int rank = 0;
  int gradient_accumulation_steps = 1;    // LLaVA's grouping uses world_size x accumulation megabatches
  // > 0: length grouping by windows instead (replaces LLaVA's megabatch grouping; opt-in). The epoch's
  // random order is cut into windows of this many global batches (world_size x batch_size samples each);
  // each window is sorted by length (longest first) and cut into global batches, and the batches of all
  // windows are shuffled. With group_by_modality_length the two modalities are windowed apart, so every
  // full global batch is single-modality; the last partial batch of each modality goes together at the
  // end. Sharding is unchanged (each global batch is split into equal per-rank slices, so ranks see
  // disjoint shards of equal size, every rank computing the same order from the seed), and the order
  // depends only on seed, epoch, world_size and batch_size (exact resume).
  int group_by_length_window = 0;
  // --dataloader_drop_last: the epoch's last global batch is dropped when it has fewer than
  // world_size x batch_size samples (HF Trainer's DataLoader(drop_last=True) under accelerate's sharding:
  // the same samples are dropped). Fewer samples than one global batch is an error.
  bool drop_last = false;
};

// One rank's batches of one epoch, in order, kept flat: the sample indices back to back and where each batch
// ends, 4 bytes each (~5 bytes per sample at batch size 4: 10M samples take 50 MB per rank).
class EpochBatches {
 public:
  EpochBatches() = default;
  EpochBatches(const std::vector<std::vector<int64_t>>& lists);  // NOLINT: implicit, as are the literal lists
  EpochBatches(std::initializer_list<std::vector<int64_t>> lists) : EpochBatches(std::vector<std::vector<int64_t>>(lists)) {}
  void reserve(size_t samples, size_t batches);
  void push_back(const uint32_t* first, const uint32_t* last);  // appends one batch
  size_t size() const { return ends_.size(); }
  bool empty() const { return ends_.empty(); }
  std::vector<int64_t> operator[](size_t k) const;  // batch k's sample indices
  std::vector<int64_t> back() const { return (*this)[size() - 1]; }
  void drop_first(size_t k);  // a resumed epoch starts at batch k
  std::vector<std::vector<int64_t>> lists() const;
  operator std::vector<std::vector<int64_t>>() const { return lists(); }  // NOLINT: for tests and tools
  bool operator==(const std::vector<std::vector<int64_t>>& lists) const { return this->lists() == lists; }

 private:
  std::vector<uint32_t> samples_;
  std::vector<uint32_t> ends_;  // batch k is samples_[k == 0 ? 0 : ends_[k - 1], ends_[k])
};
std::ostream& operator<<(std::ostream& os, const EpochBatches& batches);

class Rng;

class Sampler {
 public:
  // modality_lengths: Dataset::modality_length per sample (>0 with images, <0 text-only); at most 2^32 - 1
  // samples (indices are 4 bytes). sort_lengths: what group_by_length_window sorts by (e.g. estimated
  // sequence positions); empty: the modality lengths' magnitude.
  Sampler(std::vector<int32_t> modality_lengths, SamplerOptions options, std::vector<int32_t> sort_lengths = {});

  // The whole epoch's sample order (before sharding).
  std::vector<int64_t> epoch_order(int64_t epoch) const;
  // This rank's batches for the epoch, in order. The last global batch may be smaller (unless drop_last);
  // when it has fewer samples than ranks it is padded by repeating the epoch's first samples (as
  // DistributedSampler pads).
  EpochBatches rank_batches(int64_t epoch) const;
  int64_t batches_per_epoch() const;  // per rank
  size_t size() const { return lengths_.size(); }

 private:
  std::vector<uint32_t> order_of(int64_t epoch) const;  // epoch_order, 4 bytes an index
  std::vector<uint32_t> windowed_order(Rng& rng) const;
  int32_t sort_length(uint32_t i) const { return sort_lengths_.empty() ? std::abs(lengths_[i]) : sort_lengths_[i]; }
  std::vector<int32_t> lengths_, sort_lengths_;
  SamplerOptions opt_;
};

// A small portable RNG (SplitMix64 seeding a xoshiro256**), so orders are the same on every platform
// and standard library; uniform(n) is unbiased.
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next();
  uint64_t uniform(uint64_t n);  // in [0, n)
  std::vector<uint32_t> permutation(size_t n);  // 4-byte indices: n < 2^32, else an Error

 private:
  uint64_t s_[4];
};

}  // namespace llava
