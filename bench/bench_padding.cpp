// Benchmark 4 (issue #6): padding waste = share of the computed (padded) positions that are padding,
// with llava-train's real Sampler (include/llava/sampler.h) over a length list.
//
//   bench_padding --lengths FILE [--batch 16] [--epochs 2] [--seed 42]
//   bench_padding --data_path data.json --preprocessed out.jsonl [...]   (lengths of a real data set:
//                 modality lengths from the Dataset index, positions = length_with_images from
//                 `llava-train preprocess`)
// FILE: one sample per line, "modality_length positions [category]" (bench/length_mix.py).
// Every batch is padded to its own longest sample (right padding, as the collator does); each rank pads
// its own micro-batch. Prints one JSON object on stdout.
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llava/dataset.h"
#include "llava/sampler.h"

using json = nlohmann::json;

namespace {

struct Waste {
  double real = 0, computed = 0;
  int64_t batches = 0;
  void add(const std::vector<int64_t>& batch, const std::vector<int32_t>& positions) {
    if (batch.empty()) return;
    int64_t mx = 0, sum = 0;
    for (int64_t i : batch) mx = std::max<int64_t>(mx, positions[i]), sum += positions[i];
    real += sum;
    computed += static_cast<double>(mx) * batch.size();
    ++batches;
  }
  double share() const { return computed > 0 ? 1.0 - real / computed : 0.0; }
};

// llava-train's sampler: every rank's micro-batches of every epoch.
// window > 0: --group_by_length_window, sorting by sort_lengths (empty: the modality lengths, as training does).
Waste sampler_waste(const std::vector<int32_t>& modality, const std::vector<int32_t>& positions, bool group, int batch,
                    int world, int accum, int epochs, uint64_t seed, int window = 0,
                    const std::vector<int32_t>& sort_lengths = {}) {
  Waste w;
  for (int r = 0; r < world; ++r) {
    llava::SamplerOptions o;
    o.seed = seed;
    o.shuffle = true;
    o.group_by_modality_length = group;
    o.batch_size = batch;
    o.world_size = world;
    o.rank = r;
    o.gradient_accumulation_steps = accum;
    o.group_by_length_window = window;
    llava::Sampler s(modality, o, sort_lengths);
    for (int e = 0; e < epochs; ++e)
      for (const auto& b : s.rank_batches(e).lists()) w.add(b, positions);
  }
  return w;
}

// Not llava-train's sampler: a what-if. Random order, windows of `window` samples sorted by computed
// positions (not words) and cut into batches, batches shuffled (the "group_by_length" of HF, on the
// real sequence length, with modality kept apart as LLaVA does).
Waste sorted_window_waste(const std::vector<int32_t>& modality, const std::vector<int32_t>& positions, int batch,
                          int window, int epochs, uint64_t seed) {
  Waste w;
  for (int e = 0; e < epochs; ++e) {
    llava::Rng rng(seed * 7919 + e);
    std::vector<uint32_t> perm = rng.permutation(modality.size());
    for (int mod = 0; mod < 2; ++mod) {
      std::vector<int64_t> ids;
      for (int64_t i : perm)
        if ((modality[i] > 0) == (mod == 0)) ids.push_back(i);
      for (size_t s = 0; s < ids.size(); s += window) {
        auto b = ids.begin() + s, en = ids.begin() + std::min(ids.size(), s + window);
        std::sort(b, en, [&](int64_t x, int64_t y) { return positions[x] > positions[y]; });
        for (auto it = b; it < en; it += std::min<ptrdiff_t>(batch, en - it))
          w.add(std::vector<int64_t>(it, it + std::min<ptrdiff_t>(batch, en - it)), positions);
      }
    }
  }
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 1; i + 1 < argc; i += 2) a[argv[i]] = argv[i + 1];
  auto get = [&](const std::string& k, const std::string& d) { return a.count(k) ? a[k] : d; };
  const int batch = std::stoi(get("--batch", "16")), epochs = std::stoi(get("--epochs", "2"));
  const uint64_t seed = std::stoull(get("--seed", "42"));
  const int image_positions = std::stoi(get("--image_positions", "576"));  // LLM rows per image (CLIP-L/336)
  std::vector<int32_t> modality, positions, images;
  std::map<std::string, int64_t> categories;
  try {
    if (a.count("--lengths")) {
      std::ifstream f(a["--lengths"]);
      if (!f) throw std::runtime_error("cannot read " + a["--lengths"]);
      std::string line;
      while (std::getline(f, line)) {
        std::istringstream ss(line);
        int32_t m, p, n_img = 0;
        std::string cat;
        if (!(ss >> m >> p)) continue;
        ss >> cat >> n_img;
        modality.push_back(m);
        positions.push_back(p);
        images.push_back(n_img);
        if (!cat.empty()) ++categories[cat];
      }
    } else if (a.count("--data_path") && a.count("--preprocessed")) {
      llava::Dataset ds = llava::Dataset::open(a["--data_path"], get("--image_folder", ""));
      std::ifstream f(a["--preprocessed"]);
      std::string line;
      while (std::getline(f, line)) {
        json j = json::parse(line);
        if (j.value("status", "") != "ok") continue;
        size_t i = j["index"];
        modality.push_back(ds.modality_length(i));
        positions.push_back(j["length_with_images"]);
        images.push_back(ds.image_count(i));
      }
    } else {
      std::cerr << "usage: bench_padding --lengths FILE | --data_path JSON --preprocessed JSONL [--batch 16]\n";
      return 2;
    }
    if (modality.empty()) throw std::runtime_error("no samples");

    json scen = json::array();
    auto report = [&](const std::string& name, const std::string& what, const Waste& w, int world, int accum) {
      scen.push_back({{"name", name}, {"description", what}, {"batch", batch}, {"world_size", world},
                      {"gradient_accumulation_steps", accum}, {"padding_share", w.share()}, {"batches", w.batches},
                      {"real_positions", w.real}, {"computed_positions", w.computed}});
    };
    report("random", "no grouping (random order)", sampler_waste(modality, positions, false, batch, 1, 1, epochs, seed), 1, 1);
    report("grouped_1gpu", "--group_by_modality_length, 1 GPU, no accumulation (megabatch = batch)",
           sampler_waste(modality, positions, true, batch, 1, 1, epochs, seed), 1, 1);
    report("grouped_8gpu", "--group_by_modality_length, 8 GPUs (LLaVA-1.5 recipe: megabatch 8 x batch)",
           sampler_waste(modality, positions, true, batch, 8, 1, epochs, seed), 8, 1);
    report("grouped_1gpu_accum8", "--group_by_modality_length, 1 GPU, gradient_accumulation_steps 8",
           sampler_waste(modality, positions, true, batch, 1, 8, epochs, seed), 1, 8);
    // What `train` sorts windows by: LLaVA's word count + the sample's images x the positions of one image.
    std::vector<int32_t> trainer_sort(modality.size());
    for (size_t i = 0; i < modality.size(); ++i) trainer_sort[i] = std::abs(modality[i]) + images[i] * image_positions;
    for (int windows : {8, 64}) {
      const std::string w = std::to_string(windows);
      report("grouped_window" + w + "_1gpu",
             "--group_by_modality_length --group_by_length_window " + w + ", 1 GPU (sorted as train does: words + images x " +
                 std::to_string(image_positions) + ")",
             sampler_waste(modality, positions, true, batch, 1, 1, epochs, seed, windows, trainer_sort), 1, 1);
      report("grouped_window" + w + "_8gpu",
             "--group_by_modality_length --group_by_length_window " + w + ", 8 GPUs (sorted as train does)",
             sampler_waste(modality, positions, true, batch, 8, 1, epochs, seed, windows, trainer_sort), 8, 1);
      report("grouped_window" + w + "_positions_1gpu",
             "--group_by_length_window " + w + " sorting by real positions (Sampler sort_lengths), modality apart",
             sampler_waste(modality, positions, true, batch, 1, 1, epochs, seed, windows, positions), 1, 1);
    }
    for (int windows : {8, 64})
      report("whatif_sorted_positions_w" + std::to_string(windows),
             "what-if (not in llava-train): sort by computed positions in windows of " + std::to_string(windows) +
                 " batches",
             sorted_window_waste(modality, positions, batch, batch * windows, epochs, seed), 1, 1);

    int64_t with_images = 0;
    double mean_pos = 0;
    for (size_t i = 0; i < modality.size(); ++i) with_images += modality[i] > 0, mean_pos += positions[i];
    json out = {{"samples", modality.size()},
                {"samples_with_images", with_images},
                {"mean_positions", mean_pos / modality.size()},
                {"max_positions", *std::max_element(positions.begin(), positions.end())},
                {"epochs", epochs},
                {"scenarios", scen}};
    if (!categories.empty()) out["categories"] = categories;
    std::cout << out.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "bench_padding: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
