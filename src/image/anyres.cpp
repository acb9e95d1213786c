// LLaVA-NeXT anyres: pinpoint parsing, best-resolution choice, pad placement, unpad arithmetic, LLM
// positions, and the tiles' pixels. Float64 and int() exactly where the reference (LLaVA c121f04
// mm_utils.py / llava_arch.py) uses Python floats, so sizes and windows are the reference's.
#include "llava/anyres.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <regex>

#include "llava/error.h"

namespace llava {
namespace {

std::string quoted(const std::string& text) {
  return "'" + (text.size() > 200 ? text.substr(0, 200) + "..." : text) + "'";
}

// A list of integer pairs written as a Python literal or JSON: [(a, b), ...], [[a, b], ...], ((a, b),),
// with any whitespace and trailing commas (what ast.literal_eval and json.loads accept for such lists).
class PairListParser {
 public:
  explicit PairListParser(const std::string& text) : s_(text) {}

  std::vector<ImageSize> parse() {
    std::vector<ImageSize> out;
    const char close = open_bracket("a list of (width, height) pairs");
    while (true) {
      skip_space();
      if (peek() == close) break;
      const char pair_close = open_bracket("a (width, height) pair");
      ImageSize p;
      p.width = integer();
      expect(',');
      p.height = integer();
      skip_space();
      if (peek() == ',') ++i_;  // (a, b,) is a valid 2-tuple
      expect(pair_close);
      out.push_back(p);
      skip_space();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != close) fail(std::string("expected ',' or '") + close + "'");
    }
    ++i_;
    skip_space();
    if (i_ != s_.size()) fail("unexpected text after the list");
    return out;
  }

 private:
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error("--image_grid_pinpoints " + quoted(s_) + ": " + what + " at character " + std::to_string(i_ + 1) +
                " (expected e.g. \"[(336, 672), (672, 336)]\", \"[[336, 672], [672, 336]]\" or \"(1x1),...,(3x3)\")");
  }
  char open_bracket(const char* what) {
    skip_space();
    const char c = peek();
    if (c != '[' && c != '(') fail(std::string("expected ") + what);
    ++i_;
    return c == '[' ? ']' : ')';
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  int integer() {
    skip_space();
    const size_t start = i_;
    long long v = 0;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])) && v <= 1000000000LL)
      v = v * 10 + (s_[i_++] - '0');
    if (i_ == start) fail("expected a positive integer");
    if (v > std::numeric_limits<int>::max()) fail("number too large");
    return static_cast<int>(v);
  }

  const std::string& s_;
  size_t i_ = 0;
};

// LLaVA-NeXT's "(AxB),...,(CxD)": re.findall(r"\((\d+)x(\d+)\)"), first and last match are the range.
std::vector<ImageSize> parse_range(const std::string& text, int tile_size) {
  static const std::regex kGrid(R"(\((\d+)x(\d+)\))");
  std::vector<std::pair<int, int>> grids;
  for (auto it = std::sregex_iterator(text.begin(), text.end(), kGrid); it != std::sregex_iterator(); ++it) {
    const std::string a = (*it)[1].str(), b = (*it)[2].str();
    if (a.size() > 4 || b.size() > 4) throw Error("--image_grid_pinpoints " + quoted(text) + ": grid too large");
    grids.emplace_back(std::stoi(a), std::stoi(b));
  }
  if (grids.empty())
    throw Error("--image_grid_pinpoints " + quoted(text) +
                ": has an 'x' but no \"(AxB)\" grid (LLaVA-NeXT's range form is e.g. \"(1x1),...,(6x6)\")");
  const auto [i0, j0] = grids.front();
  const auto [i1, j1] = grids.back();
  std::vector<ImageSize> out;
  for (int i = i0; i <= i1; ++i)
    for (int j = j0; j <= j1; ++j) out.push_back({i * tile_size, j * tile_size});
  if (out.empty())
    throw Error("--image_grid_pinpoints " + quoted(text) + ": the range from (" + std::to_string(i0) + "x" +
                std::to_string(j0) + ") to (" + std::to_string(i1) + "x" + std::to_string(j1) + ") is empty");
  return out;
}

// LLM positions of an image with P tiles whose kept map is rows x cols (see anyres.h).
int merged_positions(int num_tiles, int rows, int cols, const AnyresConfig& c) {
  const int base = c.patches_per_side * c.patches_per_side;
  switch (c.merge) {
    case PatchMerge::kFlat:
      return num_tiles * c.tile_positions;
    case PatchMerge::kSpatial:
      return num_tiles * base;
    case PatchMerge::kSpatialUnpad:
      return num_tiles == 1 ? base + 1 : base + rows * (cols + 1);
  }
  return 0;
}

void check_config(const AnyresConfig& c) {
  if (c.tile_size <= 0 || c.patches_per_side <= 0 || c.tile_positions <= 0)
    throw Error("anyres: tile size, patches per side and positions per tile must be positive");
  if (c.pinpoints.empty()) throw Error("anyres: no image_grid_pinpoints");
}

}  // namespace

PatchMerge parse_patch_merge(const std::string& name) {
  if (name == "flat") return PatchMerge::kFlat;
  if (name == "spatial") return PatchMerge::kSpatial;
  if (name == "spatial_unpad") return PatchMerge::kSpatialUnpad;
  throw Error("--mm_patch_merge_type must be flat, spatial or spatial_unpad, got '" + name + "'");
}

std::string patch_merge_name(PatchMerge merge) {
  switch (merge) {
    case PatchMerge::kFlat:
      return "flat";
    case PatchMerge::kSpatial:
      return "spatial";
    case PatchMerge::kSpatialUnpad:
      return "spatial_unpad";
  }
  return "?";
}

std::vector<ImageSize> parse_grid_pinpoints(const std::string& text, int tile_size) {
  if (tile_size <= 0) throw Error("--image_grid_pinpoints: tile size must be positive");
  std::vector<ImageSize> out =
      text.find('x') != std::string::npos ? parse_range(text, tile_size) : PairListParser(text).parse();
  check_grid_pinpoints(out, tile_size, "--image_grid_pinpoints " + quoted(text));
  return out;
}

void check_grid_pinpoints(const std::vector<ImageSize>& pinpoints, int tile_size, const std::string& where) {
  if (pinpoints.empty()) throw Error(where + ": the list of (width, height) pinpoints is empty");
  for (const ImageSize& p : pinpoints) {
    const std::string pair = "(" + std::to_string(p.width) + ", " + std::to_string(p.height) + ")";
    if (p.width <= 0 || p.height <= 0) throw Error(where + ": pinpoint " + pair + " must be positive");
    if (p.width % tile_size != 0 || p.height % tile_size != 0)
      throw Error(where + ": pinpoint " + pair + " (width, height) is not a multiple of the tile size " +
                  std::to_string(tile_size) + " (the last crops would be partial tiles padded with black)");
    if (static_cast<long long>(p.width) * p.height > 100LL * 1000 * 1000)
      throw Error(where + ": pinpoint " + pair + " is too large");
  }
}

std::string pinpoints_text(const std::vector<ImageSize>& pinpoints) {
  std::string s = "[";
  for (size_t i = 0; i < pinpoints.size(); ++i)
    s += (i ? ", (" : "(") + std::to_string(pinpoints[i].width) + ", " + std::to_string(pinpoints[i].height) + ")";
  return s + "]";
}

ImageSize select_best_resolution(ImageSize original, const std::vector<ImageSize>& pinpoints) {
  if (original.width <= 0 || original.height <= 0 || pinpoints.empty())
    throw Error("select_best_resolution: needs a non-empty image and at least one pinpoint");
  const double ow = original.width, oh = original.height;
  const long long original_area = static_cast<long long>(original.width) * original.height;
  ImageSize best = pinpoints.front();
  long long max_effective = 0, min_wasted = std::numeric_limits<long long>::max();  // the reference's 0, inf
  for (const ImageSize& p : pinpoints) {
    const double scale = std::min(p.width / ow, p.height / oh);
    const long long dw = static_cast<long long>(ow * scale), dh = static_cast<long long>(oh * scale);
    const long long effective = std::min(dw * dh, original_area);
    const long long wasted = static_cast<long long>(p.width) * p.height - effective;
    // strict comparisons: of equal candidates the first wins
    if (effective > max_effective || (effective == max_effective && wasted < min_wasted)) {
      max_effective = effective;
      min_wasted = wasted;
      best = p;
    }
  }
  return best;
}

PadPlacement resize_and_pad_placement(ImageSize original, ImageSize target) {
  if (original.width <= 0 || original.height <= 0 || target.width <= 0 || target.height <= 0)
    throw Error("resize_and_pad_image: sizes must be positive");
  const double scale_w = static_cast<double>(target.width) / original.width;
  const double scale_h = static_cast<double>(target.height) / original.height;
  PadPlacement p;
  p.canvas = target;
  if (scale_w < scale_h) {
    p.resized.width = target.width;
    p.resized.height = std::min(static_cast<int>(std::ceil(original.height * scale_w)), target.height);
  } else {
    p.resized.height = target.height;
    p.resized.width = std::min(static_cast<int>(std::ceil(original.width * scale_h)), target.width);
  }
  p.paste_x = (target.width - p.resized.width) / 2;  // both >= 0: Python's // and C++'s / agree
  p.paste_y = (target.height - p.resized.height) / 2;
  return p;
}

UnpadWindow unpad_window(int rows, int cols, ImageSize original) {
  if (rows <= 0 || cols <= 0 || original.width <= 0 || original.height <= 0)
    throw Error("unpad_image: sizes must be positive");
  UnpadWindow w{0, rows, 0, cols};
  const double original_aspect = static_cast<double>(original.width) / original.height;
  const double current_aspect = static_cast<double>(cols) / rows;
  if (original_aspect > current_aspect) {
    const double scale = static_cast<double>(cols) / original.width;
    const int new_height = static_cast<int>(original.height * scale);
    const int padding = (rows - new_height) / 2;  // new_height <= rows, so / is Python's //
    w.row_begin = padding;
    w.row_end = std::max(padding, rows - padding);  // tensor[padding : rows - padding]
  } else {
    const double scale = static_cast<double>(rows) / original.height;
    const int new_width = static_cast<int>(original.width * scale);
    const int padding = (cols - new_width) / 2;
    w.col_begin = padding;
    w.col_end = std::max(padding, cols - padding);
  }
  return w;
}

AnyresImageLayout anyres_image_layout(ImageSize original, const AnyresConfig& config, bool base_only) {
  check_config(config);
  AnyresImageLayout l;
  l.original = original;
  l.best_resolution = select_best_resolution(original, config.pinpoints);
  // get_anyres_image_grid_shape divides by the vision tower's image size (= tile_size)
  l.grid_w = l.best_resolution.width / config.tile_size;
  l.grid_h = l.best_resolution.height / config.tile_size;
  l.map_rows = l.grid_h * config.patches_per_side;
  l.map_cols = l.grid_w * config.patches_per_side;
  l.kept = unpad_window(l.map_rows, l.map_cols, original);
  l.base_only = base_only;
  l.num_tiles = base_only ? 1 : 1 + l.grid_w * l.grid_h;
  l.positions = config.merge == PatchMerge::kSpatialUnpad
                    ? merged_positions(l.num_tiles, l.kept.rows(), l.kept.cols(), config)
                    : merged_positions(l.num_tiles, l.map_rows, l.map_cols, config);
  return l;
}

std::vector<AnyresImageLayout> anyres_sample_layouts(const std::vector<ImageSize>& images, const AnyresConfig& config) {
  std::vector<AnyresImageLayout> out;
  out.reserve(images.size());
  const long long budget = config.max_tiles_per_sample;
  long long used = 0;
  bool cut = false;
  for (size_t k = 0; k < images.size(); ++k) {
    AnyresImageLayout l = anyres_image_layout(images[k], config);
    const long long later = static_cast<long long>(images.size() - k - 1);  // their base tiles
    if (budget > 0 && (cut || used + l.num_tiles + later > budget)) {
      cut = true;
      l = anyres_image_layout(images[k], config, /*base_only=*/true);
    }
    used += l.num_tiles;
    out.push_back(l);
  }
  return out;
}

int anyres_max_image_positions(const AnyresConfig& config) {
  check_config(config);
  int most = merged_positions(1, 0, 0, config);  // a base-only image
  for (const ImageSize& p : config.pinpoints) {
    const int gw = p.width / config.tile_size, gh = p.height / config.tile_size;
    most = std::max(most, merged_positions(1 + gw * gh, gh * config.patches_per_side,
                                           gw * config.patches_per_side, config));
  }
  return most;
}

// ---- pixels -------------------------------------------------------------------------------------

RgbImage resize_and_pad_image(const RgbImage& image, ImageSize target) {
  const PadPlacement p = resize_and_pad_placement({image.width, image.height}, target);
  const RgbImage resized = resize_bicubic(image, p.resized.width, p.resized.height);
  RgbImage out;
  out.width = target.width;
  out.height = target.height;
  out.pixels.assign(static_cast<size_t>(target.width) * target.height * 3, 0);  // black, not the mean colour
  const size_t row = static_cast<size_t>(resized.width) * 3;
  for (int y = 0; y < resized.height; ++y)
    std::copy_n(&resized.pixels[y * row], row,
                &out.pixels[(static_cast<size_t>(y + p.paste_y) * target.width + p.paste_x) * 3]);
  return out;
}

std::vector<RgbImage> divide_to_patches(const RgbImage& image, int patch_size) {
  if (patch_size <= 0 || image.width % patch_size != 0 || image.height % patch_size != 0)
    throw Error("divide_to_patches: a " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                " image does not divide into " + std::to_string(patch_size) + " px tiles");
  std::vector<RgbImage> patches;
  const size_t row = static_cast<size_t>(patch_size) * 3;
  for (int y0 = 0; y0 < image.height; y0 += patch_size)
    for (int x0 = 0; x0 < image.width; x0 += patch_size) {  // row-major: the whole top row first
      RgbImage p;
      p.width = p.height = patch_size;
      p.pixels.resize(row * patch_size);
      for (int y = 0; y < patch_size; ++y)
        std::copy_n(&image.pixels[(static_cast<size_t>(y0 + y) * image.width + x0) * 3], row, &p.pixels[y * row]);
      patches.push_back(std::move(p));
    }
  return patches;
}

PixelTensor anyres_preprocess(const RgbImage& image, const AnyresImageLayout& layout,
                              const ImageProcessorConfig& processor) {
  if (image.width != layout.original.width || image.height != layout.original.height)
    throw Error("anyres_preprocess: the layout is for a " + std::to_string(layout.original.width) + "x" +
                std::to_string(layout.original.height) + " image, got " + std::to_string(image.width) + "x" +
                std::to_string(image.height));
  // base tile: image.resize((shortest_edge, shortest_edge)), aspect ratio not kept, no crop
  const int side = processor.shortest_edge;
  PixelTensor out = clip_preprocess(resize_bicubic(image, side, side), processor, false);
  if (layout.base_only) return out;
  const RgbImage padded = resize_and_pad_image(image, layout.best_resolution);
  const std::vector<RgbImage> crops = divide_to_patches(padded, processor.crop_height);
  if (static_cast<int>(crops.size()) + 1 != layout.num_tiles)
    throw Error("anyres_preprocess: " + std::to_string(crops.size()) + " crops of " +
                std::to_string(processor.crop_height) + " px, the layout expects " +
                std::to_string(layout.num_tiles - 1) + " (crop size != tile size)");
  const size_t tile = out.data.size();
  out.data.reserve(tile * layout.num_tiles);
  for (const RgbImage& crop : crops) {
    PixelTensor t = clip_preprocess(crop, processor, false);  // identity resize and crop for an S x S tile
    if (t.data.size() != tile) throw Error("anyres_preprocess: a crop preprocesses to a different size than the base");
    out.data.insert(out.data.end(), t.data.begin(), t.data.end());
  }
  out.tiles = layout.num_tiles;
  return out;
}

}  // namespace llava
