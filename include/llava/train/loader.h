#pragma once
// Builds batches (read, decode, preprocess, template, tokenize, mask, collate) ahead of the training
// step in worker threads. Batches come out in the sampler's order whatever the number of workers:
// worker w builds batch k, the consumer waits for k, so results never depend on thread timing.
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "llava/dataset.h"
#include "llava/example.h"
#include "llava/sampler.h"
#include "llava/train/batch.h"

namespace llava {

struct LoaderOptions {
  int num_workers = 0;      // 0: build in the calling thread
  int prefetch_batches = 2;  // per worker
  bool fail_on_bad_sample = false;  // --on_bad_sample fail: next() throws the sample's error
  int pad_id = 0;
};

class DataLoader {
 public:
  DataLoader(const Dataset& dataset, const ExampleOptions& example_options,
             EpochBatches batches, LoaderOptions options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  // The next batch in order; false when the epoch is done. A batch whose samples were all bad comes
  // back with size() == 0 and skipped > 0 (the trainer counts it and moves on).
  bool next(Batch& out);
  int64_t size() const { return static_cast<int64_t>(batches_.size()); }

 private:
  Batch build(int64_t k) const;
  void worker_loop();

  const Dataset& dataset_;
  const ExampleOptions& example_;
  EpochBatches batches_;
  LoaderOptions opt_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::exception_ptr> failed_;  // batches whose building threw: next() rethrows
  int64_t next_ = 0;     // next batch to hand out
  int64_t claimed_ = 0;  // next batch a worker will build
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

// Builds one batch from sample indices, skipping (and recording) bad samples. Shared by the loader
// and by tools that walk a dataset (eval, bench-data).
Batch build_batch(const Dataset& dataset, const ExampleOptions& options, const std::vector<int64_t>& indices,
                  int pad_id);

}  // namespace llava
