// CLIPImageProcessor / SiglipImageProcessor (transformers 4.37.2) + LLaVA's expand2square, on RGB uint8 images.
// The resize reproduces Pillow's Resample.c (BICUBIC, 8-bit path) operation for operation, so the
// uint8 result is the one Pillow gives, not merely close to it.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
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
  v >>= kPrecisionBits;  // arithmetic shift: a negative sum stays negative and clamps to 0
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// The coefficients of outputs [o0, o1) of one axis with a fixed tap count k: output i reads inputs
// [start[i], start[i] + k), all inside [0, in_size). Pillow's own window (first, count) sits inside
// it and the other taps weigh 0, so every sum is Pillow's sum plus zeros: the same integer.
struct Taps {
  int k = 0;
  std::vector<int> start;
  std::vector<int32_t> weights;  // (o1 - o0) x k
  int lo = 0, hi = 0;            // the inputs any window touches: [lo, hi)
};

Taps fixed_taps(const Coefficients& c, int in_size, int o0, int o1) {
  Taps t;
  t.k = std::min(c.ksize, in_size);
  const int n = o1 - o0;
  t.start.resize(n);
  t.weights.assign(static_cast<size_t>(n) * t.k, 0);
  t.lo = in_size;
  t.hi = 0;
  for (int i = 0; i < n; ++i) {
    const int o = o0 + i, first = c.first[o], count = c.count[o];
    // count <= min(ksize, in_size - first), so the shifted window still holds all of Pillow's taps.
    const int s = std::min(first, in_size - t.k);
    t.start[i] = s;
    std::copy_n(&c.weights[static_cast<size_t>(o) * c.ksize], count,
                &t.weights[static_cast<size_t>(i) * t.k + (first - s)]);
    t.lo = std::min(t.lo, s);
    t.hi = std::max(t.hi, s + t.k);
  }
  if (n == 0) t.lo = t.hi = 0;
  return t;
}

// The image as the resize sees it: pasted on a background canvas (LLaVA's expand2square) or alone,
// without materialising the canvas.
struct Canvas {
  const RgbImage* image = nullptr;
  int width = 0, height = 0, left = 0, top = 0;  // canvas size, image position on it
  std::array<uint8_t, 3> background{};

  bool background_row(int y) const { return y < top || y >= top + image->height; }
  // Pixels [x0, x1) of canvas row y: a pointer into the image where it covers them, else written to buf.
  const uint8_t* row(int y, int x0, int x1, uint8_t* buf) const {
    const int w = image->width;
    if (!background_row(y) && x0 >= left && x1 <= left + w)
      return &image->pixels[(static_cast<size_t>(y - top) * w + (x0 - left)) * 3];
    for (int x = x0; x < x1; ++x) std::copy(background.begin(), background.end(), &buf[(x - x0) * 3]);
    if (!background_row(y)) {
      const int a = std::max(x0, left), b = std::min(x1, left + w);
      if (b > a)
        std::copy_n(&image->pixels[(static_cast<size_t>(y - top) * w + (a - left)) * 3], (b - a) * 3,
                    &buf[(a - x0) * 3]);
    }
    return buf;
  }
};

// Per-thread buffers, reused across images (the loader's workers preprocess one image after another).
struct Scratch {
  std::vector<uint8_t> hbuf, rowbuf, out_row, bytes, stage;
  std::vector<int32_t> block, acc;
  std::vector<const uint8_t*> rows;
  void trim() {  // do not keep a huge image's buffers for the thread's lifetime
    constexpr size_t kKeep = 16u << 20;
    if (hbuf.capacity() > kKeep) std::vector<uint8_t>().swap(hbuf);
    if (block.capacity() * sizeof(int32_t) > kKeep) std::vector<int32_t>().swap(block);
    if (rowbuf.capacity() > kKeep) std::vector<uint8_t>().swap(rowbuf);
    if (bytes.capacity() > kKeep) std::vector<uint8_t>().swap(bytes);
    if (stage.capacity() > kKeep) std::vector<uint8_t>().swap(stage);
  }
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

template <class T>
void grow(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

// The two passes' inner loops are plain C++ the compiler vectorises, each in its own function that is
// never inlined (LLAVA_KERNEL). On x86-64 with GCC/Clang and glibc they are also compiled for AVX2 and
// picked at run time (ifunc), since the baseline SSE2 has no 32-bit integer multiply; the arithmetic,
// and so every result, is the same in each version. -DLLAVA_NO_VECTOR_CLONES builds the baseline only.
#if !defined(LLAVA_NO_VECTOR_CLONES) && defined(__x86_64__) && defined(__ELF__) && defined(__GLIBC__) && \
    defined(__has_attribute)
#if __has_attribute(target_clones)
#define LLAVA_KERNEL __attribute__((target_clones("avx2", "default")))  // an ifunc: never inlined
#endif
#endif
#ifndef LLAVA_KERNEL
#if defined(__GNUC__)
#define LLAVA_KERNEL __attribute__((noinline))
#else
#define LLAVA_KERNEL
#endif
#endif

// Horizontal pass over up to kBlockRows rows at once. The rows are transposed into a block where
// column x of all rows is kLanes contiguous int32, 4 per row (R, G, B and the next pixel's R, which is
// computed and never stored), so each output column is kLanes independent sums over the same k taps.
// The steps are separate loops (byte gather, widening, sums, byte scatter): each one simple enough
// for the vectoriser, and no store is read back right away (store-to-load forwarding stalls).
constexpr int kBlockRows = 8;
constexpr int kLanes = kBlockRows * 4;

LLAVA_KERNEL
void widen_bytes(int32_t* __restrict out, const uint8_t* __restrict in, size_t n) {
  for (size_t l = 0; l < n; ++l) out[l] = in[l];
}

// stage[i * kLanes + l] = clip8(half + sum_j block[(start[i] - lo + j) * kLanes + l] * w[i * k + j])
LLAVA_KERNEL
void horizontal_sums(const int32_t* __restrict block, const Taps& t, uint8_t* __restrict stage) {
  const int n = static_cast<int>(t.start.size()), k = t.k;
  for (int i = 0; i < n; ++i) {
    const int32_t* __restrict col = block + static_cast<size_t>(t.start[i] - t.lo) * kLanes;
    const int32_t* __restrict w = &t.weights[static_cast<size_t>(i) * k];
    int32_t acc[kLanes];
    for (int l = 0; l < kLanes; ++l) acc[l] = 1 << (kPrecisionBits - 1);
    for (int j = 0; j < k; ++j, col += kLanes)
      for (int l = 0; l < kLanes; ++l) acc[l] += col[l] * w[j];
    for (int l = 0; l < kLanes; ++l) stage[static_cast<size_t>(i) * kLanes + l] = clip8(acc[l]);
  }
}

// src[r] holds row r's pixels [t.lo, t.hi); dst[r] gets its outputs. Rows past nrows repeat the last
// one (computed, not stored).
void horizontal_block(const uint8_t* const* src, uint8_t* const* dst, int nrows, const Taps& t, int32_t* block,
                      uint8_t* bytes, uint8_t* stage) {
  const int cols = t.hi - t.lo, n = static_cast<int>(t.start.size());
  for (int r = 0; r < kBlockRows; ++r) {
    const uint8_t* p = src[std::min(r, nrows - 1)];
    uint8_t* b = bytes + 4 * r;
    for (int x = 0; x + 1 < cols; ++x, p += 3, b += kLanes) std::memcpy(b, p, 4);
    std::memcpy(b, p, 3);  // the last pixel: no next one to read
    b[3] = 0;
  }
  widen_bytes(block, bytes, static_cast<size_t>(cols) * kLanes);
  horizontal_sums(block, t, stage);
  for (int r = 0; r < nrows; ++r) {
    uint8_t* d = dst[r];
    const uint8_t* st = stage + 4 * r;
    // 4-byte copies: the 4th byte lands on the next output pixel, written next.
    for (int i = 0; i + 1 < n; ++i, st += kLanes) std::memcpy(d + 3 * i, st, 4);
    std::memcpy(d + 3 * (n - 1), st, 3);
  }
}

// acc[l] += in[l] * w: one tap of the vertical pass over a whole row. Not inlined on purpose: inlined
// into the loop over taps, GCC's -O3 unroll-and-jam fuses pairs of taps into a loop it then leaves
// scalar (2-3x slower).
LLAVA_KERNEL
void accumulate_row(int32_t* __restrict acc, const uint8_t* __restrict in, int32_t w, size_t lanes) {
  for (size_t l = 0; l < lanes; ++l) acc[l] += in[l] * w;
}

// One output row of the vertical pass: out[l] = clip8(half + sum_j rows[j][l] * w[j]).
void vertical_row(const uint8_t* const* rows, const int32_t* w, int k, size_t lanes, int32_t* __restrict acc,
                  uint8_t* __restrict out) {
  std::fill_n(acc, lanes, 1 << (kPrecisionBits - 1));
  for (int j = 0; j < k; ++j) accumulate_row(acc, rows[j], w[j], lanes);
  for (size_t l = 0; l < lanes; ++l) out[l] = clip8(acc[l]);
}

// Pillow's resize of the canvas to rw x rh (horizontal pass, uint8 rows, vertical pass, uint8), but
// only outputs [x0, x1) x [y0, y1): what survives a crop. Each output pixel is computed exactly as
// Pillow computes it. sink(y, row) gets output row y (x1 - x0 RGB pixels), y ascending.
template <class Sink>
void resample_region(const Canvas& cv, int rw, int rh, int x0, int x1, int y0, int y1, Sink&& sink) {
  if (x1 <= x0 || y1 <= y0) return;
  Scratch& s = scratch();
  const int ncols = x1 - x0;
  const size_t stride = static_cast<size_t>(ncols) * 3;
  const bool need_h = rw != cv.width, need_v = rh != cv.height;

  Taps vt;
  int ry0 = y0, ry1 = y1;  // canvas rows the vertical pass reads
  if (need_v) {
    vt = fixed_taps(precompute(cv.height, rh), cv.height, y0, y1);
    ry0 = vt.lo;
    ry1 = vt.hi;
  }
  const int nrows = ry1 - ry0;
  s.rows.resize(nrows);
  grow(s.hbuf, (static_cast<size_t>(nrows) + 1) * stride);

  if (need_h) {
    const Taps ht = fixed_taps(precompute(cv.width, rw), cv.width, x0, x1);
    const size_t in_row = static_cast<size_t>(ht.hi - ht.lo) * 3;
    grow(s.block, static_cast<size_t>(ht.hi - ht.lo) * kLanes);
    grow(s.bytes, static_cast<size_t>(ht.hi - ht.lo) * kLanes);
    grow(s.stage, static_cast<size_t>(ncols) * kLanes);
    grow(s.rowbuf, in_row * kBlockRows);
    // Background rows all resize to the same row: compute it once.
    uint8_t* bg_out = s.hbuf.data() + static_cast<size_t>(nrows) * stride;
    bool bg_done = false;
    const uint8_t* src[kBlockRows];
    uint8_t* dst[kBlockRows];
    int nb = 0;
    auto flush = [&] {
      if (nb) horizontal_block(src, dst, nb, ht, s.block.data(), s.bytes.data(), s.stage.data());
      nb = 0;
    };
    for (int y = ry0; y < ry1; ++y) {
      if (cv.background_row(y)) {
        if (!bg_done) {
          flush();
          const uint8_t* bsrc = cv.row(y, ht.lo, ht.hi, s.rowbuf.data());
          horizontal_block(&bsrc, &bg_out, 1, ht, s.block.data(), s.bytes.data(), s.stage.data());
          bg_done = true;
        }
        s.rows[y - ry0] = bg_out;
        continue;
      }
      uint8_t* out = s.hbuf.data() + static_cast<size_t>(y - ry0) * stride;
      src[nb] = cv.row(y, ht.lo, ht.hi, s.rowbuf.data() + in_row * nb);
      dst[nb] = out;
      s.rows[y - ry0] = out;
      if (++nb == kBlockRows) flush();
    }
    flush();
  } else {
    for (int y = ry0; y < ry1; ++y)
      s.rows[y - ry0] = cv.row(y, x0, x1, s.hbuf.data() + static_cast<size_t>(y - ry0) * stride);
  }

  if (!need_v) {
    for (int y = y0; y < y1; ++y) sink(y, s.rows[y - ry0]);
    return;
  }
  grow(s.out_row, stride);
  grow(s.acc, stride);
  for (int y = y0; y < y1; ++y) {
    const int i = y - y0;
    vertical_row(&s.rows[vt.start[i] - ry0], &vt.weights[static_cast<size_t>(i) * vt.k], vt.k, stride,
                 s.acc.data(), s.out_row.data());
    sink(y, s.out_row.data());
  }
}

void check_resize_target(int width, int height) {
  // The upper bound catches absurd aspect ratios (a 1x10000 strip to a 336 short side) before
  // they allocate gigabytes.
  if (width <= 0 || height <= 0 || static_cast<long long>(width) * height > 100LL * 1000 * 1000)
    throw Error("resize_bicubic: invalid target size " + std::to_string(width) + "x" + std::to_string(height));
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

ImageProcessorConfig ImageProcessorConfig::siglip_defaults(int image_size) {
  if (image_size <= 0) throw Error("SigLIP image size must be positive, got " + std::to_string(image_size));
  ImageProcessorConfig c = clip_defaults(image_size);
  c.resize_height = c.resize_width = image_size;
  c.do_center_crop = false;  // SiglipImageProcessor has no crop step
  c.mean = {0.5f, 0.5f, 0.5f};
  c.std = {0.5f, 0.5f, 0.5f};
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

  ImageProcessorConfig c;
  try {
    auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
    const std::string type = present("image_processor_type") ? j["image_processor_type"].get<std::string>() : "";
    if (!type.empty() && type != "CLIPImageProcessor" && type != "SiglipImageProcessor")
      throw Error(where + "image_processor_type '" + type + "' is not supported (CLIPImageProcessor, SiglipImageProcessor)");
    const bool siglip = type == "SiglipImageProcessor";
    // Keys that are absent take that processor's own defaults (224; CLIP: OpenAI CLIP mean/std, SigLIP: 0.5).
    c = siglip ? siglip_defaults(224) : clip_defaults(224);
    if (present("size")) {
      const auto& s = j["size"];
      if (s.is_number_integer()) {
        // get_size_dict(int): CLIP's default_to_square=False (shortest edge), SigLIP's square
        if (siglip) c.resize_height = c.resize_width = s.get<int>();
        else c.shortest_edge = s.get<int>();
      } else if (s.is_object() && s.contains("shortest_edge")) {
        if (siglip) throw Error(where + "SiglipImageProcessor needs \"size\" {height, width}, got " + s.dump());
        c.shortest_edge = s["shortest_edge"].get<int>();
        c.resize_height = c.resize_width = 0;
      } else if (s.is_object() && s.contains("height") && s.contains("width")) {
        c.resize_height = s["height"].get<int>();
        c.resize_width = s["width"].get<int>();
        if (c.resize_height <= 0 || c.resize_width <= 0) throw Error(where + "size must be positive");
      } else {
        throw Error(where + "unsupported \"size\" " + s.dump() +
                    " (expected an int, {\"shortest_edge\": N} or {\"height\": H, \"width\": W})");
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
    if (siglip) {
      // SiglipImageProcessor has no crop step; shortest_edge and the crop mirror the square size, the tile
      // geometry anyres reads (LLaVA-NeXT tiles SigLIP images at that size)
      c.do_center_crop = false;
      c.shortest_edge = c.crop_height = c.resize_height;
      c.crop_width = c.resize_width;
    }
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
  check_resize_target(width, height);
  if (width == image.width && height == image.height) return image;  // Pillow returns a copy too
  Canvas cv;
  cv.image = &image;
  cv.width = image.width;
  cv.height = image.height;
  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<size_t>(width) * height * 3);
  const size_t stride = static_cast<size_t>(width) * 3;
  resample_region(cv, width, height, 0, width, 0, height,
                  [&](int y, const uint8_t* row) { std::copy_n(row, stride, &out.pixels[y * stride]); });
  scratch().trim();
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
  // [expand2square] -> resize -> center crop in one pass: the canvas is never built, and the resize
  // computes only the pixels the crop keeps (each one exactly as the full resize would).
  Canvas cv;
  cv.image = &image;
  cv.width = image.width;
  cv.height = image.height;
  if (pad_to_square && image.width != image.height) {
    const int side = std::max(image.width, image.height);
    cv.width = cv.height = side;
    cv.left = (side - image.width) / 2;
    cv.top = (side - image.height) / 2;
    cv.background = config.pad_background();
  }
  int rw = cv.width, rh = cv.height;  // after the resize
  if (config.do_resize && config.resize_height > 0) {
    // exact {height, width} (SigLIP: squash to the square, aspect ratio not kept)
    if (config.resize_width != rw || config.resize_height != rh) {
      check_resize_target(config.resize_width, config.resize_height);
      rw = config.resize_width;
      rh = config.resize_height;
    }
  } else if (config.do_resize) {
    // get_resize_output_image_size(default_to_square=False): short side -> shortest_edge, long side
    // -> int(shortest_edge * long / short) (true division, then truncation).
    const int short_side = std::min(cv.width, cv.height), long_side = std::max(cv.width, cv.height);
    const int new_long =
        static_cast<int>(static_cast<double>(static_cast<long long>(config.shortest_edge) * long_side) / short_side);
    const bool portrait = cv.width <= cv.height;
    const int w = portrait ? config.shortest_edge : new_long, h = portrait ? new_long : config.shortest_edge;
    if (w != rw || h != rh) {
      check_resize_target(w, h);
      rw = w;
      rh = h;
    }
  }
  // The crop window on the resized image: HF's offsets; outside the image (a crop larger than it) HF
  // pads with zeros, which C++'s truncating division places where HF's padding path does.
  int cw = rw, ch = rh, left = 0, top = 0;
  if (config.do_center_crop && (config.crop_width != rw || config.crop_height != rh)) {
    if (config.crop_width <= 0 || config.crop_height <= 0)
      throw Error("center_crop: invalid crop size " + std::to_string(config.crop_width) + "x" +
                  std::to_string(config.crop_height));
    cw = config.crop_width;
    ch = config.crop_height;
    top = (rh - ch) / 2;
    left = (rw - cw) / 2;
  }

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
  t.height = ch;
  t.width = cw;
  const size_t plane = static_cast<size_t>(ch) * cw;
  t.data.resize(3 * plane);
  const int x0 = std::max(0, left), x1 = std::min(rw, left + cw);
  const int y0 = std::max(0, top), y1 = std::min(rh, top + ch);
  if (x0 > left || x1 < left + cw || y0 > top || y1 < top + ch)  // zero padding shows
    for (int c = 0; c < 3; ++c) std::fill_n(&t.data[c * plane], plane, table[c][0]);
  const int ncols = x1 - x0;
  resample_region(cv, rw, rh, x0, x1, y0, y1, [&](int y, const uint8_t* __restrict row) {
    float* __restrict r = &t.data[static_cast<size_t>(y - top) * cw + (x0 - left)];
    float* __restrict g = r + plane;
    float* __restrict b = g + plane;
    for (int x = 0; x < ncols; ++x) {
      r[x] = table[0][row[3 * x]];
      g[x] = table[1][row[3 * x + 1]];
      b[x] = table[2][row[3 * x + 2]];
    }
  });
  scratch().trim();
  return t;
}

}  // namespace llava
