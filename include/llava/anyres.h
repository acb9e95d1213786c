#pragma once
// LLaVA-NeXT (1.6) "anyres": each image is cut into the S x S tiles of a canvas chosen from a list of
// sizes (the grid pinpoints), after a squashed whole-image base tile (LLaVA mm_utils.process_anyres_image),
// and the arithmetic of the model's merge of those tiles' features (llava_arch.py:
// get_anyres_image_grid_shape, unpad_image, mm_patch_merge_type flat / spatial / spatial_unpad with
// image_newline). Torch-free: the data side counts LLM positions with it, the model merges with it.
// Every (width, height) pair here is in LLaVA's order: PIL's image.size, image_grid_pinpoints, image_sizes.
#include <string>
#include <vector>

#include "llava/image.h"

namespace llava {

struct ImageSize {
  int width = 0, height = 0;
  bool operator==(const ImageSize& o) const { return width == o.width && height == o.height; }
  bool operator!=(const ImageSize& o) const { return !(*this == o); }
};

// --mm_patch_merge_type: how the model lays out one image's tile features (llava_arch.py).
enum class PatchMerge { kFlat, kSpatial, kSpatialUnpad };
PatchMerge parse_patch_merge(const std::string& name);  // throws llava::Error naming the choices
std::string patch_merge_name(PatchMerge merge);

// --image_grid_pinpoints / config.json's image_grid_pinpoints, in every form LLaVA scripts write:
//   "[(336, 672), (672, 336)]"  the Python literal LLaVA reads with ast.literal_eval,
//   "[[336, 672], [672, 336]]"  JSON (config.json, YAML lists),
//   "(1x1),...,(6x6)"           LLaVA-NeXT's range: every grid (i x j) between the first and the last,
//                               i outer, j inner, each side times tile_size.
// Then check_grid_pinpoints. Throws llava::Error quoting the text and saying what is wrong.
std::vector<ImageSize> parse_grid_pinpoints(const std::string& text, int tile_size);
// Refuses an empty list and sides that are not positive multiples of tile_size (divide_to_patches
// would cut partial tiles padded with black, which no LLaVA model was trained on). `where` names the source.
void check_grid_pinpoints(const std::vector<ImageSize>& pinpoints, int tile_size, const std::string& where);
std::string pinpoints_text(const std::vector<ImageSize>& pinpoints);  // "[(336, 672), ...]"

struct AnyresConfig {
  std::vector<ImageSize> pinpoints;  // candidate canvases, multiples of tile_size
  int tile_size = 336;               // S: the processor's crop size, equal to the vision tower's image size
  int patches_per_side = 24;         // n = S / patch size: a tile's features form an n x n map
  int tile_positions = 576;          // LLM positions of one tile's features with flat (n*n, +1 with cls_patch)
  PatchMerge merge = PatchMerge::kSpatialUnpad;
  int max_tiles_per_sample = 0;      // 0: no budget (see anyres_sample_layouts)
};

// select_best_resolution: the first pinpoint with the largest effective resolution
// min(int(w*s) * int(h*s), w*h), s = min(W/w, H/h), ties to the smaller waste W*H - effective.
ImageSize select_best_resolution(ImageSize original, const std::vector<ImageSize>& pinpoints);

// resize_and_pad_image's geometry: the image resized to `resized` (aspect kept, the fitted side
// min(ceil(...), target)) and pasted at (paste_x, paste_y) on a black canvas of size `canvas`.
struct PadPlacement {
  ImageSize canvas, resized;
  int paste_x = 0, paste_y = 0;
};
PadPlacement resize_and_pad_placement(ImageSize original, ImageSize target);

// unpad_image on a rows x cols feature map of an image of size `original`: the rows [row_begin,
// row_end) and columns [col_begin, col_end) that survive. Float64 and int() as the reference: an odd
// remainder keeps new + 1 rows, a very thin image can keep 0 rows (or columns).
struct UnpadWindow {
  int row_begin = 0, row_end = 0, col_begin = 0, col_end = 0;
  int rows() const { return row_end - row_begin; }
  int cols() const { return col_end - col_begin; }
};
UnpadWindow unpad_window(int rows, int cols, ImageSize original);

// One image under anyres: what the pixels are ([num_tiles, 3, S, S]) and what the model makes of them.
struct AnyresImageLayout {
  ImageSize original;         // the decoded image's (width, height): its image_sizes entry
  ImageSize best_resolution;  // the chosen canvas
  int grid_w = 1, grid_h = 1;  // crops per row / per column (get_anyres_image_grid_shape)
  bool base_only = false;      // --max_tiles_per_sample cut it to the base tile
  int num_tiles = 1;           // P: 1 + grid_w * grid_h, base first; 1 when base_only
  int map_rows = 0, map_cols = 0;  // feature map of the crops before unpad: grid_h * n x grid_w * n
  UnpadWindow kept;            // spatial_unpad: the part of that map that survives
  int positions = 0;           // LLM positions of the image's merged feature block
};

// The layout of one image. Positions (n = patches_per_side):
//   flat: P * tile_positions;  spatial: P * n*n;
//   spatial_unpad: n*n + kept.rows() * (kept.cols() + 1) (a newline after every kept row), and
//   n*n + 1 for a 1-tile image (the reference's shape[0] == 1 branch: base + image_newline).
AnyresImageLayout anyres_image_layout(ImageSize original, const AnyresConfig& config, bool base_only = false);

// The layouts of a sample's images, in order, with the tile budget: with max_tiles_per_sample N > 0
// the first images keep their full tiling while the sample's total (each later image counted as its
// base tile) stays <= N; from the first image that does not fit on, every image is base_only. So a
// sample has at most max(N, number of images) tiles.
std::vector<AnyresImageLayout> anyres_sample_layouts(const std::vector<ImageSize>& images, const AnyresConfig& config);

// The most positions any image can take: the largest pinpoint with nothing unpadded
// (2928 for LLaVA-1.6 at 336 px: 576 + 48 * 49).
int anyres_max_image_positions(const AnyresConfig& config);

// ---- pixels (Pillow-exact, through the same resize as clip_preprocess) ------------------------------

// PIL: image.resize(resized) (BICUBIC), pasted on a black target-size canvas.
RgbImage resize_and_pad_image(const RgbImage& image, ImageSize target);
// divide_to_patches: patch_size x patch_size crops, row-major. The image sides must be multiples.
std::vector<RgbImage> divide_to_patches(const RgbImage& image, int patch_size);

// process_anyres_image for one image with its layout: [base] + crops, each through CLIPImageProcessor.
// Base = the whole image resized (squashed) to shortest_edge x shortest_edge. Result: tiles = P,
// data [P, 3, S, S] float32. base_only gives the base tile alone ([1, 3, S, S]).
PixelTensor anyres_preprocess(const RgbImage& image, const AnyresImageLayout& layout,
                              const ImageProcessorConfig& processor);

}  // namespace llava
