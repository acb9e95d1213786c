// BatchStream: epochs of sampler batches through the loader (batch_stream.h).
#include "llava/train/batch_stream.h"

#include <algorithm>
#include <stdexcept>

namespace llava {

BatchStream::BatchStream(const DataPipeline& data, const Sampler& sampler, LoaderOptions options, int64_t epoch,
                         int64_t batch)
    : data_(data), sampler_(sampler), options_(options), per_epoch_(sampler.batches_per_epoch()) {
  open(epoch, batch);
}

Batch BatchStream::next() {
  if (batch_ >= per_epoch_) open(epoch_ + 1, 0);
  Batch b;
  if (!loader_->next(b)) throw std::logic_error("BatchStream: loader ended early");
  ++batch_;
  return b;
}

void BatchStream::open(int64_t epoch, int64_t first) {
  EpochBatches batches = sampler_.rank_batches(epoch);
  batches.drop_first(static_cast<size_t>(std::max<int64_t>(first, 0)));
  loader_.reset();  // stop the old workers before the new ones start
  loader_ = std::make_unique<DataLoader>(*data_.dataset, data_.example, std::move(batches), options_);
  epoch_ = epoch;
  batch_ = first;
}

}  // namespace llava
