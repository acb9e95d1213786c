// Benchmark 1 (issue #6): llava-train's image path, images/s on the calling thread (the script pins it
// to one core). Per image: [base64 decode (the dataset does it when it parses a sample) | read the file
// (read_image_bytes, the loader's reader)] -> decode_image -> clip_preprocess (336, square or pad),
// what the data loader does per image.
//
//   bench_image MANIFEST DUMP_DIR [--seconds S] [--rounds R]
//
// MANIFEST (written by bench/make_images.py): {"cases": [{"name", "kind": "base64"|"file", "items": [...],
// "decode_modes": ["exact", "trainer"]}]}. decode "exact" decodes at full size (what PIL does);
// "trainer" passes min_short_side = 336 as the loader does (libjpeg DCT downscale of very large JPEGs).
// images_per_s is the best round (the least disturbed by other load on a shared machine); the median and
// every round are kept too. DUMP_DIR gets each image's decoded RGB and preprocessed tensor (raw bytes) and dumps.json listing them,
// for bench/image_pipeline_py.py --compare. Prints one JSON object on stdout.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "llava/base64.h"
#include "llava/example.h"
#include "llava/image.h"

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The loader's own reader (llava/example.h), so file cases time what training does.
std::vector<uint8_t> read_file(const std::string& path) {
  llava::ImageRef ref;
  ref.kind = llava::ImageRef::Kind::kPath;
  ref.path = path;
  ref.where = "image";
  return llava::read_image_bytes(ref, "bench");
}

void write_file(const std::string& path, const void* data, size_t size) {
  std::ofstream f(path, std::ios::binary);
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  if (!f) throw std::runtime_error("cannot write " + path);
}

// One image through the loader's steps; the input is the string as it sits in the data set (a base64
// string or a file path).
llava::PixelTensor process(const std::string& kind, const std::string& item, int min_short_side,
                           const llava::ImageProcessorConfig& cfg, bool pad, llava::RgbImage* decoded = nullptr) {
  std::vector<uint8_t> bytes;
  if (kind == "base64") {
    if (!llava::base64_decode(item, bytes)) throw std::runtime_error("bad base64");
  } else {
    bytes = read_file(item);
  }
  llava::RgbImage rgb = llava::decode_image(bytes.data(), bytes.size(), min_short_side);
  llava::PixelTensor t = llava::clip_preprocess(rgb, cfg, pad);
  if (decoded) *decoded = std::move(rgb);
  return t;
}

// Where the time goes (square mode, one pass over the case's images repeated `reps` times): ms per image
// for reading the bytes (base64 decode or file read), decoding, resizing, cropping, and the float
// conversion (clip_preprocess of the cropped image only rescales and normalizes), each step timed on
// its own as Python's steps are. clip_preprocess itself fuses the last three (it resizes only the
// pixels the crop keeps and writes floats straight away): preprocess_fused is its time on the decoded
// image, what the pipeline really spends after decoding.
json breakdown(const std::string& kind, const std::vector<std::string>& items, int mss,
               const llava::ImageProcessorConfig& cfg, int reps) {
  double t_bytes = 0, t_decode = 0, t_resize = 0, t_crop = 0, t_norm = 0, t_fused = 0;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  float sink = 0;
  for (int r = 0; r < reps; ++r)
    for (const std::string& item : items) {
      auto t = Clock::now();
      std::vector<uint8_t> bytes;
      if (kind == "base64") llava::base64_decode(item, bytes);
      else bytes = read_file(item);
      t_bytes += since(t);
      t = Clock::now();
      llava::RgbImage rgb = llava::decode_image(bytes.data(), bytes.size(), mss);
      t_decode += since(t);
      const int s = std::min(rgb.width, rgb.height), l = std::max(rgb.width, rgb.height);
      const int nl = static_cast<int>(static_cast<double>(static_cast<long long>(cfg.shortest_edge) * l) / s);
      const bool portrait = rgb.width <= rgb.height;
      t = Clock::now();
      llava::RgbImage rs = llava::resize_bicubic(rgb, portrait ? cfg.shortest_edge : nl, portrait ? nl : cfg.shortest_edge);
      t_resize += since(t);
      t = Clock::now();
      llava::RgbImage cr = llava::center_crop(rs, cfg.crop_width, cfg.crop_height);
      t_crop += since(t);
      t = Clock::now();
      sink += llava::clip_preprocess(cr, cfg, false).data[0];
      t_norm += since(t);
      t = Clock::now();
      sink += llava::clip_preprocess(rgb, cfg, false).data[0];
      t_fused += since(t);
    }
  if (sink == 12345.f) std::fputc(' ', stderr);
  const double n = static_cast<double>(reps) * items.size() / 1e3;
  return {{"read_bytes", t_bytes / n}, {"decode", t_decode / n}, {"resize", t_resize / n}, {"crop", t_crop / n},
          {"rescale_normalize", t_norm / n}, {"preprocess_fused", t_fused / n}};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: bench_image MANIFEST DUMP_DIR [--seconds S] [--rounds R]\n";
    return 2;
  }
  const std::string manifest_path = argv[1], dump_dir = argv[2];
  double seconds = 1.0;  // per round
  int rounds = 3;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--seconds") seconds = std::stod(argv[i + 1]);
    else if (k == "--rounds") rounds = std::stoi(argv[i + 1]);
  }
  try {
    json manifest = json::parse(std::ifstream(manifest_path));
    const llava::ImageProcessorConfig cfg;  // CLIP ViT-L/14-336: shortest edge 336, crop 336
    json results = json::array(), dumps = json::array();
    for (const json& c : manifest["cases"]) {
      const std::string name = c["name"], kind = c["kind"];
      const std::vector<std::string> items = c["items"];
      std::vector<std::string> modes = c.value("decode_modes", std::vector<std::string>{"exact"});
      for (const std::string& mode : modes) {
        const int mss = mode == "trainer" ? cfg.shortest_edge : 0;
        for (bool pad : {false, true}) {
          const std::string tag = name + "." + (pad ? "pad" : "square") + "." + mode;
          // Dump (and warm up) once per image.
          for (size_t i = 0; i < items.size(); ++i) {
            llava::RgbImage rgb;
            llava::PixelTensor t = process(kind, items[i], mss, cfg, pad, &rgb);
            std::string px = tag + "." + std::to_string(i) + ".f32";
            write_file(dump_dir + "/" + px, t.data.data(), t.data.size() * sizeof(float));
            json d = {{"case", name}, {"pad", pad}, {"decode", mode}, {"index", i}, {"pixels", px},
                      {"shape", {t.channels, t.height, t.width}}};
            if (!pad) {  // the decoded RGB does not depend on pad
              std::string rg = name + "." + mode + "." + std::to_string(i) + ".rgb";
              write_file(dump_dir + "/" + rg, rgb.pixels.data(), rgb.pixels.size());
              d["rgb"] = rg;
              d["rgb_shape"] = {rgb.height, rgb.width, 3};
            }
            dumps.push_back(d);
          }
          std::vector<double> ips;
          for (int r = 0; r < rounds; ++r) {
            size_t n = 0;
            const auto t0 = Clock::now();
            double el = 0;
            float sink = 0;
            do {
              for (const std::string& it : items) sink += process(kind, it, mss, cfg, pad).data[0];
              n += items.size();
              el = std::chrono::duration<double>(Clock::now() - t0).count();
            } while (el < seconds);
            if (sink == 12345.f) std::fputc(' ', stderr);
            ips.push_back(n / el);
          }
          json row = {{"case", name}, {"pad", pad}, {"decode", mode},
                      {"images_per_s", *std::max_element(ips.begin(), ips.end())},
                      {"median_images_per_s", median(ips)}, {"round_images_per_s", ips}};
          if (!pad) row["breakdown_ms"] = breakdown(kind, items, mss, cfg, std::max<int>(1, 32 / items.size()));
          results.push_back(row);
        }
      }
    }
    write_file(dump_dir + "/dumps.json", dumps.dump(1).data(), dumps.dump(1).size());
    std::cout << json{{"results", results}}.dump(1) << "\n";
  } catch (const std::exception& e) {
    std::cerr << "bench_image: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
