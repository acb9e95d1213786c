#pragma once
// This rank's micro-batches, epoch after epoch, from a resumable position (epoch, batch within the epoch):
// the sampler's batches for each epoch through a prefetching DataLoader.
#include <cstdint>
#include <memory>

#include "llava/pipeline.h"
#include "llava/sampler.h"
#include "llava/train/loader.h"

namespace llava {

class BatchStream {
 public:
  BatchStream(const DataPipeline& data, const Sampler& sampler, LoaderOptions options, int64_t epoch, int64_t batch);
  Batch next();  // the next micro-batch, starting the next epoch when this one is done
  bool epoch_done() const { return batch_ >= per_epoch_; }
  int64_t epoch() const { return epoch_; }
  int64_t batch() const { return batch_; }  // micro-batches of the current epoch handed out
  int64_t per_epoch() const { return per_epoch_; }

 private:
  void open(int64_t epoch, int64_t first);
  const DataPipeline& data_;
  const Sampler& sampler_;
  LoaderOptions options_;
  int64_t per_epoch_, epoch_ = 0, batch_ = 0;
  std::unique_ptr<DataLoader> loader_;
};

}  // namespace llava
