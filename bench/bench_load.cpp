// Benchmark 5 (issue #6): seconds from a model directory to a model ready to train (load_llava: config,
// safetensors, every tensor into the module's float32 CPU parameters, train mode), the file already in
// the page cache. scripts/bench.sh compares it with `cat model.safetensors > /dev/null`. The result is the
// default load (weights copied); mapped_* is LoadOptions::map_weights (weights mapped copy-on-write), and
// *_then_first_write shows what the first write of every parameter (an optimizer step) costs after each.
//
//   bench_load MODEL_DIR [--repeats 3]        (MODEL_DIR with one model.safetensors, float32)
// Prints one JSON object on stdout.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llava/model/checkpoint.h"
#include "llava/model/config.h"
#include "llava/model/llava.h"
#include "llava/model/param_init.h"
#include "llava/safetensors.h"

using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench_load MODEL_DIR [--repeats N]\n";
    return 2;
  }
  const std::string dir = argv[1];
  int repeats = 3;
  for (int i = 2; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--repeats") repeats = std::stoi(argv[i + 1]);
  try {
    // One timed load (load_llava + train(), as a training run starts) with weights mapped or copied;
    // optionally followed by writing every parameter once, which is where a mapped load pays its copy
    // (copy-on-write of each page on the first optimizer step).
    int64_t params = 0;
    auto timed_load = [&](bool map_weights, double* first_write_s) {
      const auto t0 = Clock::now();
      llava::LoadOptions lo;
      lo.map_weights = map_weights;
      llava::LoadedLlava m = llava::load_llava(dir, lo);
      m.model->train();
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      params = 0;
      for (const auto& p : m.model->parameters()) params += p.numel();
      if (first_write_s) {
        const auto t1 = Clock::now();
        torch::NoGradGuard no_grad;
        for (auto& p : m.model->parameters()) p.mul_(1.0f);
        *first_write_s = std::chrono::duration<double>(Clock::now() - t1).count();
      }
      return s;  // freeing the model is not part of loading
    };
    std::vector<double> secs, mapped_secs;
    for (int r = 0; r < repeats; ++r) secs.push_back(timed_load(false, nullptr));
    for (int r = 0; r < repeats; ++r) mapped_secs.push_back(timed_load(true, nullptr));
    double mapped_first_write_s = 0, copied_first_write_s = 0;
    const double mapped_with_write_load_s = timed_load(true, &mapped_first_write_s);
    const double copied_with_write_load_s = timed_load(false, &copied_first_write_s);
    // Where the time goes. construct: building the module tree with the default random init, as loading
    // did before it skipped the init (construct_uninitialised). copy_floor: what any copying loader pays at
    // least: mmap the file, one fresh float32 tensor per entry, memcpy.
    double construct_s = 0, construct_uninit_s = 0, copy_floor_s = 0;
    {  // once: these are for the explanation, not the result
      llava::LlavaConfig cfg = llava::LlavaConfig::from_json_file(dir + "/config.json");
      auto t0 = Clock::now();
      {
        llava::LlavaForCausalLM m(cfg);
        construct_s = std::chrono::duration<double>(Clock::now() - t0).count();
      }
      t0 = Clock::now();
      {
        llava::SkipParameterInit skip;
        llava::LlavaForCausalLM m(cfg);
        construct_uninit_s = std::chrono::duration<double>(Clock::now() - t0).count();
      }
      t0 = Clock::now();
      {
        auto f = llava::SafetensorsFile::open(dir + "/model.safetensors");
        std::vector<torch::Tensor> ts;
        for (const auto& info : f->tensors()) {
          torch::Tensor t = torch::empty(info.shape, torch::kFloat32);
          std::memcpy(t.data_ptr(), f->data(info), info.end - info.begin);
          ts.push_back(t);
        }
        copy_floor_s = std::chrono::duration<double>(Clock::now() - t0).count();
      }
    }
    std::vector<double> sorted = secs;
    std::sort(sorted.begin(), sorted.end());
    uint64_t bytes = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") bytes += e.file_size();
    std::vector<double> mapped_sorted = mapped_secs;
    std::sort(mapped_sorted.begin(), mapped_sorted.end());
    nlohmann::json out = {{"seconds_min", sorted.front()}, {"seconds_median", sorted[sorted.size() / 2]},
                          {"seconds_all", secs},
                          {"mapped_seconds_min", mapped_sorted.front()},
                          {"mapped_seconds_median", mapped_sorted[mapped_sorted.size() / 2]},
                          {"mapped_seconds_all", mapped_secs},
                          {"mapped_load_then_first_write_seconds", {mapped_with_write_load_s, mapped_first_write_s}},
                          {"copied_load_then_first_write_seconds", {copied_with_write_load_s, copied_first_write_s}},
                          {"construct_seconds", construct_s}, {"construct_uninitialised_seconds", construct_uninit_s},
                          {"copy_floor_seconds", copy_floor_s}, {"parameters", params}, {"safetensors_bytes", bytes},
                          {"torch_threads", at::get_num_threads()}};
    std::cout << out.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "bench_load: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
