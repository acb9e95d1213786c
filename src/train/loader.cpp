#include "llava/train/loader.h"

#include "llava/error.h"

namespace llava {

Batch build_batch(const Dataset& dataset, const ExampleOptions& options, const std::vector<int64_t>& indices,
                  int pad_id) {
  std::vector<Example> examples;
  std::vector<std::string> errors;
  for (int64_t i : indices) {
    try {
      examples.push_back(build_example(dataset.sample(static_cast<size_t>(i)), options));
    } catch (const DataFileChanged&) {
      throw;  // the whole data set is in question, not this sample
    } catch (const Error& e) {
      errors.push_back(e.what());
    } catch (const std::exception& e) {  // e.g. an allocation an absurd input asked for: still one bad sample
      errors.push_back(sample_context(i, dataset.id(static_cast<size_t>(i))) + ": " + e.what());
    }
  }
  Batch b = collate(std::move(examples), pad_id);
  b.skipped = static_cast<int64_t>(errors.size());
  b.errors = std::move(errors);
  return b;
}

DataLoader::DataLoader(const Dataset& dataset, const ExampleOptions& example_options,
                       EpochBatches batches, LoaderOptions options)
    : dataset_(dataset), example_(example_options), batches_(std::move(batches)), opt_(options) {
  for (int w = 0; w < opt_.num_workers; ++w) workers_.emplace_back([this] { worker_loop(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

Batch DataLoader::build(int64_t k) const { return build_batch(dataset_, example_, batches_[k], opt_.pad_id); }

void DataLoader::worker_loop() {
  const int64_t window = static_cast<int64_t>(opt_.num_workers) * opt_.prefetch_batches;
  while (true) {
    int64_t k;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Claim the next batch, but stay within the prefetch window so memory stays bounded.
      cv_.wait(lock, [&] { return stop_ || claimed_ >= size() || claimed_ < next_ + window; });
      if (stop_ || claimed_ >= size()) return;
      k = claimed_++;
    }
    // An exception (a data file changed under the run, out of memory) goes to the consumer, who rethrows it.
    Batch b;
    std::exception_ptr error;
    try {
      b = build(k);
    } catch (...) {
      error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (error) failed_.emplace(k, error);
      else ready_.emplace(k, std::move(b));
    }
    cv_.notify_all();
  }
}

bool DataLoader::next(Batch& out) {
  if (next_ >= size()) return false;
  if (workers_.empty()) {
    out = build(next_++);
  } else {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return ready_.count(next_) > 0 || failed_.count(next_) > 0; });
    if (failed_.count(next_)) std::rethrow_exception(failed_[next_]);
    out = std::move(ready_[next_]);
    ready_.erase(next_);
    ++next_;
    lock.unlock();
    cv_.notify_all();
  }
  if (opt_.fail_on_bad_sample && !out.errors.empty()) throw Error(out.errors.front());
  return true;
}

}  // namespace llava
