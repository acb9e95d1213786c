#include "llava/sampler.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "llava/error.h"

namespace llava {

Rng::Rng(uint64_t seed) {
  for (auto& s : s_) {  // SplitMix64
    seed += 0x9e3779b97f4a7c15ull;
    uint64_t z = seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    s = z ^ (z >> 31);
  }
}

uint64_t Rng::next() {  // xoshiro256**
  auto rotl = [](uint64_t x, int k) { return (x << k) | (x >> (64 - k)); };
  uint64_t result = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

uint64_t Rng::uniform(uint64_t n) {
  uint64_t limit = std::numeric_limits<uint64_t>::max() - std::numeric_limits<uint64_t>::max() % n;
  uint64_t x;
  do x = next(); while (x >= limit);
  return x % n;
}

std::vector<uint32_t> Rng::permutation(size_t n) {
  if (n > std::numeric_limits<uint32_t>::max())
    throw Error("a permutation of " + std::to_string(n) + " indices; at most " +
                std::to_string(std::numeric_limits<uint32_t>::max()) + " are supported");
  std::vector<uint32_t> p(n);
  std::iota(p.begin(), p.end(), 0u);
  for (size_t i = n; i-- > 1;) std::swap(p[i], p[uniform(static_cast<uint64_t>(i) + 1)]);
  return p;
}

namespace {

// LLaVA's get_length_grouped_indices for one modality: random order, megabatches of `mega`, each
// sorted by length (descending) and split into `chunks` balanced chunks. The megabatches come back to
// back in one list (megabatch k at [k * mega, min((k + 1) * mega, n))): a list of lists would cost a
// heap block per megabatch, ~70 bytes per 4 samples at 665K samples.
std::vector<uint32_t> grouped_megabatches(const std::vector<uint32_t>& ids, const std::vector<int32_t>& modality_lengths,
                                          int chunks, int64_t mega, Rng& rng) {
  auto length_of = [&](uint32_t i) { return static_cast<int64_t>(std::abs(modality_lengths[i])); };
  std::vector<uint32_t> out(ids.size());
  {
    const std::vector<uint32_t> perm = rng.permutation(ids.size());
    for (size_t k = 0; k < perm.size(); ++k) out[k] = ids[perm[k]];
  }
  std::vector<uint32_t> flat;
  std::vector<std::vector<uint32_t>> ch(chunks);
  for (size_t start = 0; start < out.size(); start += mega) {
    const auto mb = out.begin() + start, mb_end = out.begin() + std::min(out.size(), start + static_cast<size_t>(mega));
    const size_t size = static_cast<size_t>(mb_end - mb);
    std::stable_sort(mb, mb_end, [&](uint32_t a, uint32_t b) { return length_of(a) > length_of(b); });
    flat.clear();
    if (size % chunks != 0) {  // not divisible: round-robin
      for (int c = 0; c < chunks; ++c)
        for (size_t k = c; k < size; k += chunks) flat.push_back(mb[k]);
    } else {  // greedy: each index to the chunk with the smallest running length, chunks capped
      const size_t cap = size / chunks;
      for (auto& c : ch) c.clear();
      std::vector<int64_t> sums(chunks, 0);
      for (auto it = mb; it != mb_end; ++it) {
        int best = 0;
        for (int c = 1; c < chunks; ++c)
          if (sums[c] < sums[best]) best = c;
        ch[best].push_back(*it);
        sums[best] += length_of(*it);
        if (ch[best].size() == cap) sums[best] = std::numeric_limits<int64_t>::max();
      }
      for (auto& c : ch) flat.insert(flat.end(), c.begin(), c.end());
    }
    std::copy(flat.begin(), flat.end(), mb);
  }
  return out;
}

}  // namespace

Sampler::Sampler(std::vector<int32_t> modality_lengths, SamplerOptions options, std::vector<int32_t> sort_lengths)
    : lengths_(std::move(modality_lengths)), sort_lengths_(std::move(sort_lengths)), opt_(options) {
  if (opt_.batch_size < 1 || opt_.world_size < 1 || opt_.rank < 0 || opt_.rank >= opt_.world_size)
    throw Error("sampler: bad batch size / world size / rank");
  if (opt_.group_by_length_window < 0) throw Error("sampler: group_by_length_window must be >= 0");
  if (lengths_.size() > std::numeric_limits<uint32_t>::max())
    throw Error("sampler: " + std::to_string(lengths_.size()) + " samples; at most " +
                std::to_string(std::numeric_limits<uint32_t>::max()) + " are supported");
  if (!sort_lengths_.empty() && sort_lengths_.size() != lengths_.size())
    throw Error("sampler: one sort length per sample needed");
  const size_t global = static_cast<size_t>(opt_.world_size) * opt_.batch_size;
  if (opt_.drop_last && lengths_.size() < global)
    throw Error("--dataloader_drop_last: the " + std::to_string(lengths_.size()) + " samples make no full batch of " +
                std::to_string(opt_.world_size) + " rank(s) x " + std::to_string(opt_.batch_size) +
                " (every batch would be dropped)");
}

// Random order -> windows of group_by_length_window global batches, each sorted longest first and cut into
// global batches -> batches shuffled. Sorting only inside a window keeps the batches' composition random
// across the epoch while neighbours in a batch have nearly the same length.
std::vector<uint32_t> Sampler::windowed_order(Rng& rng) const {
  const uint32_t n = static_cast<uint32_t>(lengths_.size());
  const size_t global = static_cast<size_t>(opt_.world_size) * opt_.batch_size;
  const size_t window = global * static_cast<size_t>(opt_.group_by_length_window);
  std::vector<uint32_t> perm = rng.permutation(n);
  std::vector<std::vector<uint32_t>> groups(1);
  if (opt_.group_by_modality_length) {
    groups.assign(2, {});
    for (uint32_t i : perm) groups[lengths_[i] > 0 ? 0 : 1].push_back(i);
    perm = {};
  } else {
    groups[0] = std::move(perm);
  }
  // The groups' full global batches, back to back (batch k at [k * global, (k + 1) * global)), then the
  // partial last batch of each group.
  std::vector<uint32_t> full, tail;
  full.reserve(n);
  for (auto& ids : groups) {
    for (size_t s = 0; s < ids.size(); s += window) {
      auto b = ids.begin() + s, e = ids.begin() + std::min(ids.size(), s + window);
      // ties keep the random order; stable for the same order on every platform
      std::stable_sort(b, e, [&](uint32_t x, uint32_t y) { return sort_length(x) > sort_length(y); });
    }
    const size_t kept = ids.size() / global * global;
    full.insert(full.end(), ids.begin(), ids.begin() + kept);
    tail.insert(tail.end(), ids.begin() + kept, ids.end());
    ids = {};
  }
  std::vector<uint32_t> order;
  order.reserve(n);
  for (uint32_t k : rng.permutation(full.size() / global))
    order.insert(order.end(), full.begin() + k * global, full.begin() + (k + 1) * global);
  order.insert(order.end(), tail.begin(), tail.end());
  return order;
}

std::vector<int64_t> Sampler::epoch_order(int64_t epoch) const {
  const std::vector<uint32_t> order = order_of(epoch);
  return {order.begin(), order.end()};
}

std::vector<uint32_t> Sampler::order_of(int64_t epoch) const {
  const uint32_t n = static_cast<uint32_t>(lengths_.size());
  if (!opt_.shuffle) {
    std::vector<uint32_t> order(n);
    std::iota(order.begin(), order.end(), 0u);
    return order;
  }
  Rng rng(opt_.seed * 1000003ull + static_cast<uint64_t>(epoch));
  if (opt_.group_by_length_window > 0) return windowed_order(rng);
  if (!opt_.group_by_modality_length) return rng.permutation(n);

  const int chunks = opt_.world_size * opt_.gradient_accumulation_steps;
  const int64_t mega = static_cast<int64_t>(opt_.batch_size) * chunks;
  std::vector<uint32_t> image_ids, text_ids;
  for (uint32_t i = 0; i < n; ++i) (lengths_[i] > 0 ? image_ids : text_ids).push_back(i);
  if (image_ids.empty() || text_ids.empty()) {
    std::vector<uint32_t> all(n);
    std::iota(all.begin(), all.end(), 0u);
    return grouped_megabatches(all, lengths_, chunks, mega, rng);  // the megabatches in order
  }
  // Both modalities: group each, keep every full megabatch single-modality, shuffle them, and put the
  // two leftovers (each modality's last megabatch) together, sorted by index, at the end.
  const std::vector<uint32_t> image_mb = grouped_megabatches(image_ids, lengths_, chunks, mega, rng);
  const std::vector<uint32_t> text_mb = grouped_megabatches(text_ids, lengths_, chunks, mega, rng);
  image_ids = {};
  text_ids = {};
  const int64_t image_kept = (static_cast<int64_t>(image_mb.size()) - 1) / mega;  // megabatches before the last
  const int64_t text_kept = (static_cast<int64_t>(text_mb.size()) - 1) / mega;
  std::vector<uint32_t> order;
  order.reserve(n);
  for (uint32_t k : rng.permutation(static_cast<size_t>(image_kept + text_kept))) {
    const auto from = k < image_kept ? image_mb.begin() + k * mega : text_mb.begin() + (k - image_kept) * mega;
    order.insert(order.end(), from, from + mega);
  }
  std::vector<uint32_t> leftover(image_mb.begin() + image_kept * mega, image_mb.end());
  leftover.insert(leftover.end(), text_mb.begin() + text_kept * mega, text_mb.end());
  std::sort(leftover.begin(), leftover.end());
  order.insert(order.end(), leftover.begin(), leftover.end());
  return order;
}

EpochBatches::EpochBatches(const std::vector<std::vector<int64_t>>& lists) {
  for (const auto& b : lists) {
    std::vector<uint32_t> batch;
    for (int64_t i : b) {
      if (i < 0 || i > std::numeric_limits<uint32_t>::max())
        throw Error("EpochBatches: sample index " + std::to_string(i) + " outside [0, 2^32)");
      batch.push_back(static_cast<uint32_t>(i));
    }
    push_back(batch.data(), batch.data() + batch.size());
  }
}

void EpochBatches::reserve(size_t samples, size_t batches) {
  samples_.reserve(samples);
  ends_.reserve(batches);
}

void EpochBatches::push_back(const uint32_t* first, const uint32_t* last) {
  samples_.insert(samples_.end(), first, last);
  ends_.push_back(static_cast<uint32_t>(samples_.size()));
}

std::vector<int64_t> EpochBatches::operator[](size_t k) const {
  return {samples_.begin() + (k == 0 ? 0 : ends_[k - 1]), samples_.begin() + ends_[k]};
}

void EpochBatches::drop_first(size_t k) {
  k = std::min(k, size());
  if (k == 0) return;
  const uint32_t cut = ends_[k - 1];
  samples_.erase(samples_.begin(), samples_.begin() + cut);
  ends_.erase(ends_.begin(), ends_.begin() + static_cast<std::ptrdiff_t>(k));
  for (uint32_t& e : ends_) e -= cut;
}

std::vector<std::vector<int64_t>> EpochBatches::lists() const {
  std::vector<std::vector<int64_t>> out;
  for (size_t k = 0; k < size(); ++k) out.push_back((*this)[k]);
  return out;
}

std::ostream& operator<<(std::ostream& os, const EpochBatches& batches) {
  os << "{";
  for (size_t k = 0; k < batches.size(); ++k) {
    os << (k ? ", {" : "{");
    const std::vector<int64_t> b = batches[k];
    for (size_t i = 0; i < b.size(); ++i) os << (i ? ", " : "") << b[i];
    os << "}";
  }
  return os << "}";
}

EpochBatches Sampler::rank_batches(int64_t epoch) const {
  std::vector<uint32_t> order = order_of(epoch);
  const int64_t W = opt_.world_size, B = opt_.batch_size;
  // drop_last: torch's DataLoader drops the incomplete per-device batch and accelerate the incomplete round
  // of them, which leaves the full global batches; nothing is padded then.
  if (opt_.drop_last) order.resize(order.size() - order.size() % static_cast<size_t>(W * B));
  // Pad so every rank has a sample in the last global batch (DistributedSampler pads by wrapping).
  for (size_t k = 0; order.size() % W != 0; ++k) order.push_back(order[k % lengths_.size()]);
  EpochBatches out;
  out.reserve(order.size() / W, static_cast<size_t>(batches_per_epoch()));
  for (size_t start = 0; start < order.size(); start += W * B) {
    size_t global = std::min<size_t>(W * B, order.size() - start);
    size_t per_rank = global / W;
    size_t begin = start + opt_.rank * per_rank;
    out.push_back(order.data() + begin, order.data() + begin + per_rank);
  }
  return out;
}

int64_t Sampler::batches_per_epoch() const {
  int64_t global = static_cast<int64_t>(opt_.world_size) * opt_.batch_size;
  int64_t n = static_cast<int64_t>(lengths_.size());
  if (opt_.drop_last) return n / global;
  n += (opt_.world_size - n % opt_.world_size) % opt_.world_size;
  return (n + global - 1) / global;
}

}  // namespace llava
