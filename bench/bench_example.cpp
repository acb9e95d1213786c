// Benchmark 8b: what building an example costs besides its images, side by side in one process. For a data
// set of base64 (or path) images, rounds alternate:
//   full    Dataset::sample(i) + build_example(...) with pixels: what a loader worker does per sample
//   images  the same images alone: base64 decode (or file read) + decode_image + clip_preprocess (bench_image)
//   sample  Dataset::sample(i) alone (the JSON read from the mapped file, base64 decoded into bytes)
//   text    build_example without pixels on a parsed sample (template, tokenizer, masking)
// non_image_ms_per_sample = full - images, the four timed one after the other per sample (so load from other
// work hits them alike); medians over the rounds. Prints one JSON object.
//
//   bench_example MODEL_DIR DATA [--image_folder DIR] [--pad] [--rounds R] [--samples N]
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llava/base64.h"
#include "llava/example.h"
#include "llava/pipeline.h"

using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

long minor_faults() {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

// Each sample's images (decoded base64 bytes or resolved paths), read once before the timed rounds.
std::vector<std::vector<llava::ImageRef>> raw_images(const llava::Dataset& ds, size_t n) {
  std::vector<std::vector<llava::ImageRef>> out;
  for (size_t i = 0; i < n; ++i) out.push_back(ds.sample(i).images);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench_example MODEL_DIR DATA [--image_folder DIR] [--pad] [--rounds R] [--samples N]\n";
    return 2;
  }
  llava::Options o;
  o.model_name_or_path = argv[1];
  o.data_path = argv[2];
  int rounds = 5;
  size_t samples = 200;
  for (int i = 3; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--pad") o.image_aspect_ratio = "pad";
    else if (k == "--image_folder" && i + 1 < argc) o.image_folder = argv[++i];
    else if (k == "--rounds" && i + 1 < argc) rounds = std::stoi(argv[++i]);
    else if (k == "--samples" && i + 1 < argc) samples = std::stoul(argv[++i]);
  }
  try {
    auto p = llava::make_data_pipeline(o, true);
    const llava::Dataset& ds = *p->dataset;
    const size_t n = std::min(samples, ds.size());
    const llava::ExampleOptions& ex = p->example;
    llava::ExampleOptions no_pixels = ex;
    no_pixels.load_pixels = false;
    // the images pass works from the encoded bytes as the file holds them: base64 text re-encoded from the
    // decoded bytes (same length and decode work as the file's), or the paths
    std::vector<std::vector<std::string>> b64(n);
    std::vector<std::vector<llava::ImageRef>> refs = raw_images(ds, n);
    for (size_t i = 0; i < n; ++i)
      for (const auto& r : refs[i])
        b64[i].push_back(r.kind == llava::ImageRef::Kind::kInline ? llava::base64_encode(r.bytes.data(), r.bytes.size()) : "");
    // Per sample, the four measurements one right after the other: load from other work on the machine
    // hits them alike, and full - images stays meaningful. Each round sums them over the samples.
    std::vector<double> full(rounds), images(rounds), sample(rounds), text(rounds);
    long faults_full = 0, faults_images = 0;
    float sink = 0;
    size_t image_count = 0;
    for (int r = 0; r < rounds; ++r) {
      image_count = 0;
      faults_full = faults_images = 0;
      for (size_t i = 0; i < n; ++i) {
        long f0 = minor_faults();
        auto t = Clock::now();
        sink += static_cast<float>(llava::build_example(ds.sample(i), ex).input_ids.size());
        full[r] += since(t);
        faults_full += minor_faults() - f0;
        f0 = minor_faults();
        t = Clock::now();
        for (size_t k = 0; k < refs[i].size(); ++k, ++image_count) {
          std::vector<uint8_t> bytes;
          if (refs[i][k].kind == llava::ImageRef::Kind::kInline) llava::base64_decode(b64[i][k], bytes);
          else bytes = llava::read_image_bytes(refs[i][k], "bench");
          llava::RgbImage rgb = llava::decode_image(bytes.data(), bytes.size(), ex.image_config.shortest_edge);
          sink += llava::clip_preprocess(rgb, ex.image_config, ex.pad_to_square).data[0];
        }
        images[r] += since(t);
        faults_images += minor_faults() - f0;
        t = Clock::now();
        llava::Sample parsed = ds.sample(i);
        sample[r] += since(t);
        t = Clock::now();
        sink += static_cast<float>(llava::build_example(parsed, no_pixels).input_ids.size());
        text[r] += since(t);
      }
    }
    if (sink == 1234.5f) std::fputc(' ', stderr);
    // the median round of each, and of full - images per round
    auto median_ms = [&](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2] / static_cast<double>(n) * 1e3;
    };
    std::vector<double> diff(rounds);
    for (int r = 0; r < rounds; ++r) diff[r] = full[r] - images[r];
    json out = {{"samples", n},
                {"images", image_count},
                {"rounds", rounds},
                {"pad", ex.pad_to_square},
                {"full_ms_per_sample", median_ms(full)},
                {"images_ms_per_sample", median_ms(images)},
                {"non_image_ms_per_sample", median_ms(diff)},
                {"sample_read_ms_per_sample", median_ms(sample)},
                {"template_tokenize_ms_per_sample", median_ms(text)},
                {"page_faults_per_sample_full", static_cast<double>(faults_full) / n},
                {"page_faults_per_sample_images", static_cast<double>(faults_images) / n},
                {"rounds_full_s", full},
                {"rounds_images_s", images}};
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
