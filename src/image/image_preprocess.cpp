// CLIPImageProcessor (transformers 4.37.2) + LLaVA's expand2square, on RGB uint8 images.
// The resize reproduces Pillow's Resample.c (BICUBIC, 8-bit path) operation for operation, so the
// uint8 result is the one Pillow gives, not merely close to it.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>

#include "llava/error.h"
#include "llava/image.h"

namespace llava {
namespace {

void check_image(const RgbImage& image, const char* what) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3)
    throw Error(std::string(what) + ": invalid RGB image " + std::to_string(image.width) + "x" +
                std::to_string(image.height) + " with " + std::to_string(image.pixels.size()) + " bytes");
}

// ---- Pillow resample ----------------------------------------------------------------------------

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's fixed point: 8 bits of result, 2 of headroom

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output pixel: first input index, tap count, and ksize fixed-point weights.
struct Coefficients {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for a full-image box.
Coefficients precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);  // antialiasing: widen the kernel when shrinking
  const double support = 2.0 * filterscale;
  Coefficients c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size);
    const int n = std::min(xmax - xmin, c.ksize);
    double sum = 0.0;
    for (int x = 0; x < n; ++x) {
      w[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
      sum += w[x];
    }
    int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < n; ++x) {
      const double v = sum != 0.0 ? w[x] / sum : w[x];
      k[x] = static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = std::max(n, 0);
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  if (v < 0) return 0;
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v > 255 ? 255 : v);
}

}  // namespace

// ---- config ------------------------------------------------------------------------------------

ImageProcessorConfig ImageProcessorConfig::clip_defaults(int image_size) {
  if (image_size <= 0) throw Error("CLIP image size must be positive, got " + std::to_string(image_size));
  ImageProcessorConfig c;
  c.shortest_edge = image_size;
  c.crop_height = c.crop_width = image_size;
  return c;
}

ImageProcessorConfig ImageProcessorConfig::from_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open image processor config '" + path + "'");
  const std::string where = "image processor config '" + path + "': ";
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + "invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(where + "expected a JSON object");

  // Keys that are absent take CLIPImageProcessor's own defaults (224, OpenAI CLIP mean/std).
  ImageProcessorConfig c = clip_defaults(224);
  try {
    auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
    if (present("size")) {
      const auto& s = j["size"];
      if (s.is_number_integer()) {
        c.shortest_edge = s.get<int>();  // get_size_dict(int, default_to_square=False)
      } else if (s.is_object() && s.contains("shortest_edge")) {
        c.shortest_edge = s["shortest_edge"].get<int>();
      } else {
        throw Error(where + "unsupported \"size\" " + s.dump() +
                    " (expected an int or {\"shortest_edge\": N}; exact {height, width} resizes are not supported)");
      }
    }
    if (present("crop_size")) {
      const auto& s = j["crop_size"];
      if (s.is_number_integer()) {
        c.crop_height = c.crop_width = s.get<int>();
      } else if (s.is_object() && s.contains("height") && s.contains("width")) {
        c.crop_height = s["height"].get<int>();
        c.crop_width = s["width"].get<int>();
      } else {
        throw Error(where + "unsupported \"crop_size\" " + s.dump() + " (expected an int or {height, width})");
      }
    }
    if (present("resample") && j["resample"].get<int>() != 3)
      throw Error(where + "only resample 3 (PIL BICUBIC) is supported, got " + j["resample"].dump());
    for (auto [key, flag] : {std::pair{"do_resize", &c.do_resize}, std::pair{"do_center_crop", &c.do_center_crop},
                             std::pair{"do_rescale", &c.do_rescale}, std::pair{"do_normalize", &c.do_normalize}})
      if (present(key)) *flag = j[key].get<bool>();
    if (present("rescale_factor")) c.rescale_factor = j["rescale_factor"].get<double>();
    for (auto [key, out] : {std::pair{"image_mean", &c.mean}, std::pair{"image_std", &c.std}}) {
      if (!present(key)) continue;
      const auto& v = j[key];
      if (v.is_number()) {
        out->fill(v.get<float>());
      } else if (v.is_array() && v.size() == 3) {
        for (int i = 0; i < 3; ++i) (*out)[i] = v[i].get<float>();
      } else {
        throw Error(where + "\"" + key + "\" must be a number or a list of 3 numbers, got " + v.dump());
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(where + e.what());
  }

  if (c.do_resize && c.shortest_edge <= 0) throw Error(where + "size must be positive");
  if (c.do_center_crop && (c.crop_height <= 0 || c.crop_width <= 0)) throw Error(where + "crop_size must be positive");
  if (!std::isfinite(c.rescale_factor)) throw Error(where + "rescale_factor must be finite");
  for (int i = 0; i < 3; ++i)
    if (!std::isfinite(c.mean[i]) || !std::isfinite(c.std[i]) || c.std[i] == 0.0f)
      throw Error(where + "image_mean/image_std must be finite and image_std non-zero");
  return c;
}

std::array<uint8_t, 3> ImageProcessorConfig::pad_background() const {
  std::array<uint8_t, 3> bg{};
  for (int i = 0; i < 3; ++i) {
    // Python's int() truncates; the clamp only guards against means outside [0, 1].
    const int v = static_cast<int>(static_cast<double>(mean[i]) * 255);
    bg[i] = static_cast<uint8_t>(std::clamp(v, 0, 255));
  }
  return bg;
}

// ---- geometry -----------------------------------------------------------------------------------

RgbImage resize_bicubic(const RgbImage& image, int width, int height) {
  check_image(image, "resize_bicubic");
  // The upper bound catches absurd aspect ratios (a 1x10000 strip to a 336 short side) before
  // they allocate gigabytes.
  if (width <= 0 || height <= 0 || static_cast<long long>(width) * height > 100LL * 1000 * 1000)
    throw Error("resize_bicubic: invalid target size " + std::to_string(width) + "x" + std::to_string(height));
  if (width == image.width && height == image.height) return image;  // Pillow returns a copy too

  const Coefficients vert = precompute(image.height, height);
  // Like Pillow, the horizontal pass only covers the source rows the vertical pass reads.
  const int row_first = vert.first[0];
  const int row_end = vert.first[height - 1] + vert.count[height - 1];

  RgbImage tmp;
  const RgbImage* src = &image;
  int src_row0 = 0;
  if (width != image.width) {
    const Coefficients hor = precompute(image.width, width);
    tmp.width = width;
    tmp.height = row_end - row_first;
    tmp.pixels.resize(static_cast<size_t>(tmp.width) * tmp.height * 3);
    for (int y = 0; y < tmp.height; ++y) {
      const uint8_t* in = &image.pixels[static_cast<size_t>(y + row_first) * image.width * 3];
      uint8_t* out = &tmp.pixels[static_cast<size_t>(y) * width * 3];
      for (int xx = 0; xx < width; ++xx) {
        const int32_t* k = &hor.weights[static_cast<size_t>(xx) * hor.ksize];
        const uint8_t* p = in + static_cast<size_t>(hor.first[xx]) * 3;
        int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < hor.count[xx]; ++x, p += 3) {
          s0 += p[0] * k[x];
          s1 += p[1] * k[x];
          s2 += p[2] * k[x];
        }
        out[3 * xx] = clip8(s0);
        out[3 * xx + 1] = clip8(s1);
        out[3 * xx + 2] = clip8(s2);
      }
    }
    src = &tmp;
    src_row0 = row_first;
  }
  if (height == image.height) return tmp;  // the horizontal pass covered every row

  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<size_t>(width) * height * 3);
  const size_t stride = static_cast<size_t>(width) * 3;
  std::vector<int32_t> acc(stride);
  for (int yy = 0; yy < height; ++yy) {
    const int32_t* k = &vert.weights[static_cast<size_t>(yy) * vert.ksize];
    const uint8_t* in = &src->pixels[static_cast<size_t>(vert.first[yy] - src_row0) * stride];
    // Row-wise accumulation: the same integer sums as Pillow's per-pixel loop, cache-friendly.
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int y = 0; y < vert.count[yy]; ++y, in += stride)
      for (size_t i = 0; i < stride; ++i) acc[i] += in[i] * k[y];
    uint8_t* o = &out.pixels[yy * stride];
    for (size_t i = 0; i < stride; ++i) o[i] = clip8(acc[i]);
  }
  return out;
}

RgbImage expand_to_square(const RgbImage& image, std::array<uint8_t, 3> background) {
  check_image(image, "expand_to_square");
  if (image.width == image.height) return image;
  const int side = std::max(image.width, image.height);
  const int left = (side - image.width) / 2, top = (side - image.height) / 2;
  RgbImage out;
  out.width = out.height = side;
  out.pixels.resize(static_cast<size_t>(side) * side * 3);
  for (size_t i = 0; i < out.pixels.size(); i += 3) std::copy(background.begin(), background.end(), &out.pixels[i]);
  const size_t row = static_cast<size_t>(image.width) * 3;
  for (int y = 0; y < image.height; ++y)
    std::copy_n(&image.pixels[y * row], row, &out.pixels[(static_cast<size_t>(y + top) * side + left) * 3]);
  return out;
}

RgbImage center_crop(const RgbImage& image, int width, int height) {
  check_image(image, "center_crop");
  if (width <= 0 || height <= 0)
    throw Error("center_crop: invalid crop size " + std::to_string(width) + "x" + std::to_string(height));
  if (width == image.width && height == image.height) return image;
  // HF's offsets. For a crop larger than the image, C++'s truncating division gives the placement
  // HF's zero-padding path ends up with (it pads with zeros too).
  const int top = (image.height - height) / 2, left = (image.width - width) / 2;
  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.assign(static_cast<size_t>(width) * height * 3, 0);
  const int x0 = std::max(0, -left), x1 = std::min(width, image.width - left);
  for (int y = 0; y < height; ++y) {
    const int sy = y + top;
    if (sy < 0 || sy >= image.height || x1 <= x0) continue;
    std::copy_n(&image.pixels[(static_cast<size_t>(sy) * image.width + x0 + left) * 3],
                static_cast<size_t>(x1 - x0) * 3, &out.pixels[(static_cast<size_t>(y) * width + x0) * 3]);
  }
  return out;
}

// ---- pipeline -----------------------------------------------------------------------------------

PixelTensor clip_preprocess(const RgbImage& image, const ImageProcessorConfig& config, bool pad_to_square) {
  check_image(image, "clip_preprocess");
  RgbImage work;
  const RgbImage* cur = &image;
  auto replace = [&](RgbImage next) {
    work = std::move(next);
    cur = &work;
  };
  if (pad_to_square && image.width != image.height) replace(expand_to_square(image, config.pad_background()));
  if (config.do_resize) {
    // get_resize_output_image_size(default_to_square=False): short side -> shortest_edge, long side
    // -> int(shortest_edge * long / short) (true division, then truncation).
    const int short_side = std::min(cur->width, cur->height), long_side = std::max(cur->width, cur->height);
    const int new_long =
        static_cast<int>(static_cast<double>(static_cast<long long>(config.shortest_edge) * long_side) / short_side);
    const bool portrait = cur->width <= cur->height;
    const int w = portrait ? config.shortest_edge : new_long, h = portrait ? new_long : config.shortest_edge;
    if (w != cur->width || h != cur->height) replace(resize_bicubic(*cur, w, h));
  }
  if (config.do_center_crop && (config.crop_width != cur->width || config.crop_height != cur->height))
    replace(center_crop(*cur, config.crop_width, config.crop_height));

  // README item 5: pixel = float32(float64(u8) * rescale_factor); (pixel - float32(mean)) / float32(std)
  // in float32. A value depends only on (channel, u8), so a table is exact.
  float table[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) {
      float x = config.do_rescale ? static_cast<float>(static_cast<double>(v) * config.rescale_factor)
                                  : static_cast<float>(v);
      if (config.do_normalize) x = (x - config.mean[c]) / config.std[c];
      table[c][v] = x;
    }

  PixelTensor t;
  t.channels = 3;
  t.height = cur->height;
  t.width = cur->width;
  const size_t plane = static_cast<size_t>(t.height) * t.width;
  t.data.resize(3 * plane);
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) t.data[c * plane + i] = table[c][cur->pixels[3 * i + c]];
  return t;
}

}  // namespace llava
