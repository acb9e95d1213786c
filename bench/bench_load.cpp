// Benchmark 5 (issue #6): seconds from a model directory to a model ready to train (load_llava: config,
// safetensors, every tensor into the module's float32 CPU parameters, train mode), the file already in
// the page cache. scripts/bench.sh compares it with `cat model.safetensors > /dev/null`.
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
    std::vector<double> secs;
    int64_t params = 0;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = Clock::now();
      {
        llava::LoadedLlava m = llava::load_llava(dir);
        m.model->train();
        secs.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
        params = 0;
        for (const auto& p : m.model->parameters()) params += p.numel();
      }  // freeing the model is not part of loading
    }
    // Where the time goes. construct: building the module tree (parameter allocation and default
    // init) without reading weights. copy_floor: what any copying loader pays at least: mmap the file,
    // one fresh float32 tensor per entry, memcpy.
    double construct_s = 1e30, copy_floor_s = 1e30;
    for (int r = 0; r < 1; ++r) {  // once: these are for the explanation, not the result
      auto t0 = Clock::now();
      {
        llava::LlavaConfig cfg = llava::LlavaConfig::from_json_file(dir + "/config.json");
        llava::LlavaForCausalLM m(cfg);
        construct_s = std::min(construct_s, std::chrono::duration<double>(Clock::now() - t0).count());
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
        copy_floor_s = std::min(copy_floor_s, std::chrono::duration<double>(Clock::now() - t0).count());
      }
    }
    std::vector<double> sorted = secs;
    std::sort(sorted.begin(), sorted.end());
    uint64_t bytes = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") bytes += e.file_size();
    nlohmann::json out = {{"seconds_min", sorted.front()}, {"seconds_median", sorted[sorted.size() / 2]},
                          {"seconds_all", secs}, {"construct_seconds", construct_s},
                          {"copy_floor_seconds", copy_floor_s}, {"parameters", params}, {"safetensors_bytes", bytes},
                          {"torch_threads", at::get_num_threads()}};
    std::cout << out.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "bench_load: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
