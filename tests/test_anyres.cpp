// anyres (LLaVA-NeXT / 1.6): pinpoint parsing, best resolution, pad placement, unpad, positions, the tile
// budget, tile pixels, the example builder and the pipeline set-up; then everything data-side of the
// llava-next-tiny fixture (reference LLaVA c121f04): anyres_cases.json, samples.json, the stored pixels
// and uint8 intermediates, and template_chatml_direct.json.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "llava/anyres.h"
#include "llava/dataset.h"
#include "llava/error.h"
#include "llava/example.h"
#include "llava/pipeline.h"
#include "llava/safetensors.h"
#include "test_data_support.h"

using namespace llava;
using llava::testing::error_of;
using nlohmann::json;

namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<ImageSize> pairs(const json& j) {
  std::vector<ImageSize> out;
  for (const auto& p : j) out.push_back({p[0].get<int>(), p[1].get<int>()});
  return out;
}

// The fixture's geometry: 56 px tiles, 14 px patches (4 x 4 per tile), its pinpoints.
AnyresConfig tiny_next_config(PatchMerge merge = PatchMerge::kSpatialUnpad) {
  AnyresConfig c;
  c.pinpoints = {{56, 112}, {112, 56}, {112, 112}, {56, 168}, {168, 56}};
  c.tile_size = 56;
  c.patches_per_side = 4;
  c.tile_positions = 16;
  c.merge = merge;
  return c;
}

// LLaVA-1.6 at 336 px (CLIP ViT-L/14-336: 24 x 24 patches).
AnyresConfig llava16_config() {
  AnyresConfig c;
  c.pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  c.tile_size = 336;
  c.patches_per_side = 24;
  c.tile_positions = 576;
  return c;
}

RgbImage solid(int w, int h, std::array<uint8_t, 3> rgb) {
  RgbImage im;
  im.width = w;
  im.height = h;
  for (int i = 0; i < w * h; ++i) im.pixels.insert(im.pixels.end(), rgb.begin(), rgb.end());
  return im;
}

}  // namespace

// ---- pinpoints ------------------------------------------------------------------------------------

TEST(Pinpoints, PythonLiteralJsonAndTupleForms) {
  const std::vector<ImageSize> want = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  EXPECT_EQ(parse_grid_pinpoints("[(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]", 336), want);
  EXPECT_EQ(parse_grid_pinpoints("[[336,672],[672,336],[672,672],[1008,336],[336,1008]]", 336), want);
  EXPECT_EQ(parse_grid_pinpoints(" ( (336,672) , [672, 336], (672,672,), (1008,336), (336,1008), ) ", 336), want);
  EXPECT_EQ(pinpoints_text(want), "[(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]");
}

TEST(Pinpoints, LlavaNextRangeIsEveryGridTimesTheTileSize) {
  // (1x1),...,(6x6): i = 1..6 outer, j = 1..6 inner, each pair (i * 336, j * 336) read as (width, height)
  std::vector<ImageSize> p = parse_grid_pinpoints("(1x1),...,(6x6)", 336);
  ASSERT_EQ(p.size(), 36u);
  EXPECT_EQ(p[0], (ImageSize{336, 336}));
  EXPECT_EQ(p[1], (ImageSize{336, 672}));
  EXPECT_EQ(p[5], (ImageSize{336, 2016}));
  EXPECT_EQ(p[6], (ImageSize{672, 336}));
  EXPECT_EQ(p[35], (ImageSize{2016, 2016}));
  const std::vector<ImageSize> small = {{56, 56}, {56, 112}, {56, 168}, {112, 56}, {112, 112}, {112, 168}};
  EXPECT_EQ(parse_grid_pinpoints("(1x1),...,(2x3)", 56), small);
}

TEST(Pinpoints, BadListsAreClearErrors) {
  const std::string not_multiple = error_of([] { parse_grid_pinpoints("[(336, 672), (336, 600)]", 336); });
  EXPECT_TRUE(contains(not_multiple, "(336, 600)") && contains(not_multiple, "not a multiple of the tile size 336"))
      << not_multiple;
  EXPECT_TRUE(contains(error_of([] { parse_grid_pinpoints("[]", 336); }), "empty"));
  EXPECT_TRUE(contains(error_of([] { parse_grid_pinpoints("(2x2),...,(1x1)", 336); }), "is empty"));
  for (const char* bad : {"", "[(336, 672)", "[336, 672]", "[(336, -672)]", "[(336.0, 672)]", "[(336, 672)] x",
                          "[(336 672)]", "(ax1)"}) {
    const std::string e = error_of([&] { parse_grid_pinpoints(bad, 336); });
    EXPECT_TRUE(contains(e, "--image_grid_pinpoints")) << "'" << bad << "': " << e;
  }
  EXPECT_EQ(parse_patch_merge("spatial_unpad"), PatchMerge::kSpatialUnpad);
  EXPECT_TRUE(contains(error_of([] { parse_patch_merge("unpad"); }), "flat, spatial or spatial_unpad"));
}

// ---- geometry (expected values worked out by hand from the reference formulas) -------------------

TEST(AnyresGeometry, BestResolutionByEffectiveThenWasteFirstWins) {
  const AnyresConfig c = tiny_next_config();
  // 90x50: (56,112) s=0.622 -> 56*31=1736; (112,56) s=1.12 -> 100*56 capped at 4500, waste 1772;
  // (112,112) s=1.244 -> 112*62 capped at 4500, waste 8044 -> (112, 56)
  EXPECT_EQ(select_best_resolution({90, 50}, c.pinpoints), (ImageSize{112, 56}));
  // A 1x1 image: every effective resolution is 1, the smallest canvases tie on waste: the first one wins,
  // so the answer depends on the (width, height) order of the list.
  EXPECT_EQ(select_best_resolution({1, 1}, {{112, 56}, {56, 112}}), (ImageSize{112, 56}));
  EXPECT_EQ(select_best_resolution({1, 1}, {{56, 112}, {112, 56}}), (ImageSize{56, 112}));
  // (width, height): a wide image goes to the wide canvas
  EXPECT_EQ(select_best_resolution({1000, 10}, c.pinpoints), (ImageSize{168, 56}));
}

TEST(AnyresGeometry, PadPlacementCeilsTheFittedSide) {
  // 300x40 -> (168, 56): sx = 0.56 < sy = 1.4: width 168, height min(ceil(22.4), 56) = 23, pasted at (0, 16)
  PadPlacement p = resize_and_pad_placement({300, 40}, {168, 56});
  EXPECT_EQ(p.resized, (ImageSize{168, 23}));
  EXPECT_EQ(p.paste_x, 0);
  EXPECT_EQ(p.paste_y, 16);
  // 90x50 -> (112, 56): sx = 1.244 >= sy = 1.12: height 56, width ceil(100.8) = 101, pasted at (5, 0)
  p = resize_and_pad_placement({90, 50}, {112, 56});
  EXPECT_EQ(p.resized, (ImageSize{101, 56}));
  EXPECT_EQ(p.paste_x, 5);
}

TEST(AnyresGeometry, UnpadKeepsNewPlusOneForOddRemaindersAndCanKeepNothing) {
  // 300x40 on a 4 x 12 map: new = int(40 * 12/300) = int(1.6) = 1, pad = (4 - 1) // 2 = 1 -> rows [1, 3): 2 = new + 1
  UnpadWindow w = unpad_window(4, 12, {300, 40});
  EXPECT_EQ(w.row_begin, 1);
  EXPECT_EQ(w.row_end, 3);
  EXPECT_EQ(w.cols(), 12);
  // 1000x10: new = int(0.12) = 0, pad = 2 -> rows [2, 2): nothing left (the reference keeps 0)
  w = unpad_window(4, 12, {1000, 10});
  EXPECT_EQ(w.rows(), 0);
  EXPECT_EQ(w.row_begin, 2);
  // 10x1000 on 12 x 4: the column branch, new = int(10 * 12/1000) = 0, pad = 2 -> 0 columns
  w = unpad_window(12, 4, {10, 1000});
  EXPECT_EQ(w.cols(), 0);
  EXPECT_EQ(w.rows(), 12);
}

TEST(AnyresGeometry, PositionsPerMergeType) {
  // 120x120 -> (112, 112): grid 2x2, P = 5, map 8 x 8, nothing unpadded
  AnyresImageLayout l = anyres_image_layout({120, 120}, tiny_next_config());
  EXPECT_EQ(l.grid_w, 2);
  EXPECT_EQ(l.grid_h, 2);
  EXPECT_EQ(l.num_tiles, 5);
  EXPECT_EQ(l.positions, 16 + 8 * (8 + 1));  // base rows, then 8 rows of 8 + image_newline
  EXPECT_EQ(anyres_image_layout({120, 120}, tiny_next_config(PatchMerge::kSpatial)).positions, 5 * 16);
  EXPECT_EQ(anyres_image_layout({120, 120}, tiny_next_config(PatchMerge::kFlat)).positions, 5 * 16);
  // base only: the reference's 1-crop branch (base + image_newline with unpad)
  EXPECT_EQ(anyres_image_layout({120, 120}, tiny_next_config(), true).positions, 16 + 1);
  EXPECT_EQ(anyres_image_layout({120, 120}, tiny_next_config(PatchMerge::kSpatial), true).positions, 16);
  // 0 kept columns still leave one image_newline per row: 16 + 12 * (0 + 1)
  EXPECT_EQ(anyres_image_layout({10, 1000}, tiny_next_config()).positions, 28);
  // LLaVA-1.6 at 336 px: at most 576 + 48 * (48 + 1) positions per image (672 x 672, nothing unpadded)
  EXPECT_EQ(anyres_max_image_positions(llava16_config()), 2928);
  AnyresConfig spatial = llava16_config();
  spatial.merge = PatchMerge::kSpatial;
  EXPECT_EQ(anyres_max_image_positions(spatial), 5 * 576);
}

TEST(AnyresGeometry, TileBudgetCutsLaterImagesToTheBaseTile) {
  AnyresConfig c = tiny_next_config();
  const std::vector<ImageSize> images = {{120, 120}, {150, 90}, {90, 50}};  // P = 5, 5, 3
  auto tiles = [&](int budget) {
    c.max_tiles_per_sample = budget;
    std::vector<int> t;
    for (const auto& l : anyres_sample_layouts(images, c)) t.push_back(l.base_only ? -l.num_tiles : l.num_tiles);
    return t;  // negative: cut to the base tile
  };
  EXPECT_EQ(tiles(0), (std::vector<int>{5, 5, 3}));
  EXPECT_EQ(tiles(13), (std::vector<int>{5, 5, 3}));
  EXPECT_EQ(tiles(11), (std::vector<int>{5, 5, -1}));   // 5 + 5 + 1 = 11
  EXPECT_EQ(tiles(10), (std::vector<int>{5, -1, -1}));  // 5 + 5 + 1 > 10: from image 1 on, base only
  EXPECT_EQ(tiles(6), (std::vector<int>{-1, -1, -1}));  // 5 + 1 + 1 > 6
  EXPECT_EQ(tiles(1), (std::vector<int>{-1, -1, -1}));  // never fewer than one tile per image
}

// ---- pixels ---------------------------------------------------------------------------------------

TEST(AnyresPixels, BlackPaddingAndRowMajorCrops) {
  // 20x10 -> (56, 56): width 56, height ceil(28.0) = 28, pasted at (0, 14); the rest is black
  RgbImage padded = resize_and_pad_image(solid(20, 10, {200, 100, 50}), {56, 56});
  ASSERT_EQ(padded.width, 56);
  ASSERT_EQ(padded.height, 56);
  for (int y = 0; y < 56; ++y) {
    const uint8_t* px = &padded.pixels[static_cast<size_t>(y) * 56 * 3];
    const bool image_row = y >= 14 && y < 42;
    ASSERT_EQ(px[0], image_row ? 200 : 0) << "row " << y;
    ASSERT_EQ(px[2], image_row ? 50 : 0) << "row " << y;
  }
  // quadrants of a 112x112 image come out top-left, top-right, bottom-left, bottom-right
  RgbImage quads = solid(112, 112, {0, 0, 0});
  for (int y = 0; y < 112; ++y)
    for (int x = 0; x < 112; ++x) quads.pixels[(y * 112 + x) * 3] = static_cast<uint8_t>(1 + (y / 56) * 2 + x / 56);
  std::vector<RgbImage> crops = divide_to_patches(quads, 56);
  ASSERT_EQ(crops.size(), 4u);
  for (int k = 0; k < 4; ++k) EXPECT_EQ(crops[k].pixels[0], k + 1);
  EXPECT_TRUE(contains(error_of([&] { divide_to_patches(quads, 50); }), "does not divide"));
}

TEST(AnyresPixels, BaseFirstThenCropsNormalised) {
  const ImageProcessorConfig proc = ImageProcessorConfig::clip_defaults(56);
  const RgbImage image = solid(20, 10, {200, 100, 50});
  // 20x10: (56, 112) and (112, 56) tie (effective 200, same waste): the first, (56, 112), wins.
  // Canvas 56 x 112: the image resized to 56 x 28 at (0, 42); crop 0 = canvas rows 0..55, crop 1 = 56..111.
  const AnyresImageLayout l = anyres_image_layout({20, 10}, tiny_next_config());
  ASSERT_EQ(l.best_resolution, (ImageSize{56, 112}));
  ASSERT_EQ(l.num_tiles, 3);
  PixelTensor t = anyres_preprocess(image, l, proc);
  ASSERT_EQ(t.tiles, 3);
  ASSERT_EQ(t.data.size(), size_t{3} * 3 * 56 * 56);
  // README item 5: float32(float64(u8) * rescale), then (x - mean) / std in float32
  auto normalised = [&](int c, int v) {
    return (static_cast<float>(v * proc.rescale_factor) - proc.mean[c]) / proc.std[c];
  };
  const size_t tile = 3 * 56 * 56, plane = 56 * 56;
  auto at = [&](int k, int c, int y, int x) { return t.data[k * tile + c * plane + y * 56 + x]; };
  EXPECT_EQ(at(0, 0, 0, 0), normalised(0, 200));  // base: the whole image squashed, no padding anywhere
  EXPECT_EQ(at(0, 2, 55, 55), normalised(2, 50));
  EXPECT_EQ(at(1, 0, 41, 0), normalised(0, 0));  // crop 0: black above the image
  EXPECT_EQ(at(1, 0, 42, 0), normalised(0, 200));
  EXPECT_EQ(at(2, 1, 13, 7), normalised(1, 100));  // crop 1: canvas row 69, the image's last row
  EXPECT_EQ(at(2, 1, 14, 7), normalised(1, 0));    // black below it
  // a base-only layout gives [1, 3, S, S]
  PixelTensor base = anyres_preprocess(image, anyres_image_layout({20, 10}, tiny_next_config(), true), proc);
  EXPECT_EQ(base.tiles, 1);
  EXPECT_EQ(base.data.size(), tile);
  // an image so thin it resizes to 168 x 2 still gives its 4 tiles
  PixelTensor thin = anyres_preprocess(solid(1000, 10, {9, 9, 9}), anyres_image_layout({1000, 10}, tiny_next_config()), proc);
  EXPECT_EQ(thin.tiles, 4);
}

// ---- the example builder on the self-made data directory (runs everywhere) ------------------------

class AnyresExample : public ::testing::Test {
 protected:
  void SetUp() override {
    d = &llava::testing::tiny_data_dir();
    tok = std::make_unique<LlamaTokenizer>(LlamaTokenizer::from_dir(d->model_dir));
    opt.tokenizer = tok.get();
    opt.conversation = &ConversationTemplate::get("v1");
    opt.image_feature_positions = 4;
    opt.image_config = ImageProcessorConfig::clip_defaults(28);
    opt.model_max_length = 1000;
    AnyresConfig a;  // 28 px tiles of 2 x 2 patches
    a.pinpoints = {{28, 56}, {56, 28}, {56, 56}};
    a.tile_size = 28;
    a.patches_per_side = 2;
    a.tile_positions = 4;
    opt.anyres = a;
  }
  Example build(const std::string& text) {
    Dataset ds = Dataset::from_text(text, d->image_dir, "anyres.json");
    return build_example(ds.sample(0), opt);
  }
  // b.png is 40x20: (56, 28) wins (effective 800, least waste), grid 2x1, P = 3, map 2 x 4, aspect 2 = 4/2
  // keeps every column: 4 + 2 * (4 + 1) = 14 positions.
  const std::string two_images_ =
      R"([{"id": "two", "image": ["b.png", "b.png"], "conversations": [{"from": "human", "value": "<image>\n<image>\nwhat colour"}, {"from": "gpt", "value": "red"}]}])";
  const llava::testing::TinyDataDir* d = nullptr;
  std::unique_ptr<LlamaTokenizer> tok;
  ExampleOptions opt;
};

TEST_F(AnyresExample, RealPositionsSizesAndTiles) {
  Example ex = build(two_images_);
  ASSERT_EQ(ex.image_layouts.size(), 2u);
  EXPECT_EQ(ex.image_sizes, (std::vector<ImageSize>{{40, 20}, {40, 20}}));
  EXPECT_EQ(ex.image_layouts[0].best_resolution, (ImageSize{56, 28}));
  EXPECT_EQ(ex.image_layouts[0].positions, 14);
  EXPECT_EQ(ex.length_with_images, static_cast<int>(ex.input_ids.size()) - 2 + 14 + 14);
  ASSERT_EQ(ex.pixels.size(), 2u);
  EXPECT_EQ(ex.pixels[0].tiles, 3);
  EXPECT_EQ(ex.pixels[0].data.size(), size_t{3} * 3 * 28 * 28);
  EXPECT_TRUE(ex.warning.empty()) << ex.warning;
  // without pixels the images are still decoded: their sizes decide the positions
  opt.load_pixels = false;
  Example no_pixels = build(two_images_);
  EXPECT_TRUE(no_pixels.pixels.empty());
  EXPECT_EQ(no_pixels.length_with_images, ex.length_with_images);
  // a text-only sample has no layouts
  Example text = build(R"([{"id": "t", "conversations": [{"from": "human", "value": "what"}, {"from": "gpt", "value": "red"}]}])");
  EXPECT_TRUE(text.image_layouts.empty());
  EXPECT_EQ(text.length_with_images, static_cast<int>(text.input_ids.size()));
}

TEST_F(AnyresExample, TooLongNamesThePositionsAndTheTileBudgetFitsIt) {
  const int ids = static_cast<int>(build(two_images_).input_ids.size());
  opt.model_max_length = ids - 2 + 27;  // one short of two full images
  const std::string e = error_of([&] { build(two_images_); });
  EXPECT_TRUE(contains(e, "sample 0 (id 'two'): too long: " + std::to_string(ids - 2 + 28) + " positions")) << e;
  EXPECT_TRUE(contains(e, "14 + 14 positions") && contains(e, "--max_tiles_per_sample")) << e;
  opt.anyres->max_tiles_per_sample = 4;  // image 0: 3 tiles + image 1's base tile = 4
  Example ex = build(two_images_);
  EXPECT_EQ(ex.images_base_only, 1);
  EXPECT_FALSE(ex.image_layouts[0].base_only);
  EXPECT_TRUE(ex.image_layouts[1].base_only);
  EXPECT_EQ(ex.image_layouts[1].positions, 4 + 1);  // base + image_newline
  EXPECT_EQ(ex.length_with_images, ids - 2 + 14 + 5);
  EXPECT_EQ(ex.pixels[1].tiles, 1);
  EXPECT_TRUE(contains(ex.warning, "--max_tiles_per_sample 4: image(s) 1 use the base tile only (full tiling: 6 tiles)"))
      << ex.warning;
}

// ---- llava-next-tiny: the reference's answers -----------------------------------------------------

class NextFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    LLAVA_REQUIRE_FIXTURES();
    dir = llava::testing::fixture("llava-next-tiny");
    tok = std::make_unique<LlamaTokenizer>(LlamaTokenizer::from_dir(dir));
  }
  ExampleOptions options(const std::string& version) const {
    ExampleOptions o;
    o.tokenizer = tok.get();
    o.conversation = &ConversationTemplate::get(version);
    o.image_feature_positions = 16;
    o.image_config = ImageProcessorConfig::from_json_file(dir + "/clip-vit-tiny-patch14-56/preprocessor_config.json");
    o.anyres = tiny_next_config();
    return o;
  }
  Dataset dataset() const { return Dataset::open(dir + "/data.json", dir + "/images"); }
  json read_json(const std::string& rel) const { return json::parse(llava::testing::read_file(dir + "/" + rel)); }
  std::string dir;
  std::unique_ptr<LlamaTokenizer> tok;
};

void expect_layout(const AnyresImageLayout& l, const json& e) {
  EXPECT_EQ(l.original, (ImageSize{e["original_size_wh"][0].get<int>(), e["original_size_wh"][1].get<int>()}));
  EXPECT_EQ(l.best_resolution, (ImageSize{e["best_resolution_wh"][0].get<int>(), e["best_resolution_wh"][1].get<int>()}));
  EXPECT_EQ(l.grid_w, e["grid_wh"][0].get<int>());
  EXPECT_EQ(l.grid_h, e["grid_wh"][1].get<int>());
  EXPECT_EQ(l.num_tiles, e["num_crops_incl_base"].get<int>());
  EXPECT_EQ(l.map_rows, e["feature_map_hw_before_unpad"][0].get<int>());
  EXPECT_EQ(l.map_cols, e["feature_map_hw_before_unpad"][1].get<int>());
  EXPECT_EQ(l.kept.rows(), e["feature_map_hw_after_unpad"][0].get<int>());
  EXPECT_EQ(l.kept.cols(), e["feature_map_hw_after_unpad"][1].get<int>());
  EXPECT_EQ(l.kept.row_begin, e["unpad_kept_rows"][0].get<int>());
  EXPECT_EQ(l.kept.row_end, e["unpad_kept_rows"][1].get<int>());
  EXPECT_EQ(l.kept.col_begin, e["unpad_kept_cols"][0].get<int>());
  EXPECT_EQ(l.kept.col_end, e["unpad_kept_cols"][1].get<int>());
  EXPECT_EQ(l.positions, e["merged_len"].get<int>());
  const PadPlacement p = resize_and_pad_placement(l.original, l.best_resolution);
  EXPECT_EQ(p.resized, (ImageSize{e["resized_wh"][0].get<int>(), e["resized_wh"][1].get<int>()}));
  EXPECT_EQ(p.paste_x, e["paste_xy"][0].get<int>());
  EXPECT_EQ(p.paste_y, e["paste_xy"][1].get<int>());
}

// 24 sizes x 3 pinpoint lists (the fixture's, an asymmetric one, a single square), and LLaVA-1.6 at 336 px.
TEST_F(NextFixture, AnyresCasesMatchReference) {
  const json d = read_json("expected/anyres_cases.json");
  AnyresConfig c = tiny_next_config();
  c.tile_size = d["image_size"].get<int>();
  c.patches_per_side = d["patches_per_side"].get<int>();
  int compared = 0;
  for (const json& e : d["cases"]) {
    SCOPED_TRACE(e.dump());
    c.pinpoints = pairs(d["lists"][e["pinpoints"].get<std::string>()]);
    expect_layout(anyres_image_layout({e["original_size_wh"][0].get<int>(), e["original_size_wh"][1].get<int>()}, c), e);
    ++compared;
  }
  const json& real = d["llava_v1_6_real"];
  AnyresConfig r = llava16_config();
  r.pinpoints = pairs(real["pinpoints"]);
  r.tile_size = real["image_size"].get<int>();
  r.patches_per_side = real["patches_per_side"].get<int>();
  for (const json& e : real["cases"]) {
    SCOPED_TRACE(e.dump());
    expect_layout(anyres_image_layout({e["original_size_wh"][0].get<int>(), e["original_size_wh"][1].get<int>()}, r), e);
    ++compared;
  }
  EXPECT_EQ(compared, 72 + 8);
  std::printf("anyres_cases.json: %d cases, 16 fields each, compared exactly\n", compared);
}

// A batch's images in the model's order, compared with the stored tensors bit for bit.
struct PixelDiff {
  double max_abs = 0;
  size_t differing = 0, compared = 0;
};
PixelDiff compare(const std::vector<float>& got, const std::vector<float>& want) {
  PixelDiff d;
  EXPECT_EQ(got.size(), want.size());
  for (size_t k = 0; k < std::min(got.size(), want.size()); ++k) {
    d.max_abs = std::max(d.max_abs, static_cast<double>(std::abs(got[k] - want[k])));
    d.differing += got[k] != want[k];
  }
  d.compared = want.size();
  return d;
}

TEST_F(NextFixture, MistralInstructSamplesMatchReference) {
  const ExampleOptions opt = options("mistral_instruct");
  const Dataset ds = dataset();
  const json samples = read_json("expected/samples.json")["samples"];
  auto pixels = SafetensorsFile::open(dir + "/expected/pixel_values.safetensors");
  ASSERT_EQ(ds.size(), samples.size());
  for (size_t i = 0; i < ds.size(); ++i) {
    SCOPED_TRACE("sample " + std::to_string(i));
    const json& e = samples[i];
    Example ex = build_example(ds.sample(i), opt);
    EXPECT_EQ(ex.prompt, e["prompt"].get<std::string>());
    EXPECT_EQ(ex.input_ids, e["input_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(ex.labels, e["labels"].get<std::vector<int32_t>>());
    EXPECT_EQ(ex.num_target_tokens, e["num_label_tokens"].get<int>());
    EXPECT_EQ(ex.length_with_images, e["merged_seq_len"].get<int>());
    EXPECT_EQ(ex.image_sizes, pairs(e["image_sizes"]));
    EXPECT_TRUE(ex.warning.empty()) << ex.warning;
    ASSERT_EQ(ex.image_layouts.size(), e["images"].size());
    // where each image block sits in the merged sequence: the k-th -200 shifted by the earlier blocks
    std::vector<std::vector<int>> offsets;
    int shift = 0, k = 0;
    for (size_t t = 0; t < ex.input_ids.size(); ++t) {
      if (ex.input_ids[t] != -200) continue;
      const int start = static_cast<int>(t) + shift, n = ex.image_layouts[k++].positions;
      offsets.push_back({start, start + n});
      shift += n - 1;
    }
    EXPECT_EQ(offsets, e["image_token_offsets_in_merged_sequence"].get<std::vector<std::vector<int>>>());
    for (size_t k = 0; k < ex.image_layouts.size(); ++k) {
      SCOPED_TRACE("image " + std::to_string(k));
      expect_layout(ex.image_layouts[k], e["images"][k]);
      const std::string name = "sample" + std::to_string(i) + ".image" + std::to_string(k) + ".pixel_values";
      const TensorInfo& ref = pixels->at(name);
      ASSERT_EQ(ex.pixels[k].tiles, ref.shape[0]);
      ASSERT_EQ(ex.pixels[k].height, ref.shape[2]);
      const PixelDiff diff = compare(ex.pixels[k].data, pixels->to_float(ref));
      EXPECT_EQ(diff.differing, 0u) << name << ": max |diff| " << diff.max_abs;
      std::printf("%s [%d,3,%d,%d]: %zu values, %zu differ, max |diff| %.3g\n", name.c_str(), ex.pixels[k].tiles,
                  ex.pixels[k].height, ex.pixels[k].width, diff.compared, diff.differing, diff.max_abs);
    }
  }
}

// The resize and pad, the squashed base and the normalisation from the reference's own decoded pixels:
// exact uint8 canvases and bases, exact pixel values (this isolates the decoder, compared last).
TEST_F(NextFixture, TilesFromStoredIntermediatesAreExact) {
  auto u8 = SafetensorsFile::open(dir + "/expected/anyres_images_uint8.safetensors");
  auto pixels = SafetensorsFile::open(dir + "/expected/pixel_values.safetensors");
  const ExampleOptions opt = options("mistral_instruct");
  const Dataset ds = dataset();
  auto image = [&](const std::string& name) {
    const TensorInfo& t = u8->at(name);
    RgbImage im;
    im.height = static_cast<int>(t.shape[0]);
    im.width = static_cast<int>(t.shape[1]);
    im.pixels.assign(u8->data(t), u8->data(t) + t.numel());
    return im;
  };
  int images = 0, decoder_max = 0;
  for (size_t i = 0; i < ds.size(); ++i) {
    const Sample s = ds.sample(i);
    for (size_t k = 0; k < s.images.size(); ++k, ++images) {
      const std::string p = "sample" + std::to_string(i) + ".image" + std::to_string(k) + ".";
      SCOPED_TRACE(p);
      const RgbImage decoded = image(p + "decoded_rgb_uint8");
      const AnyresImageLayout l = anyres_image_layout({decoded.width, decoded.height}, *opt.anyres);
      EXPECT_EQ(resize_and_pad_image(decoded, l.best_resolution).pixels, image(p + "padded_canvas_rgb_uint8").pixels);
      EXPECT_EQ(resize_bicubic(decoded, 56, 56).pixels, image(p + "base_squashed_rgb_uint8").pixels);
      const PixelDiff diff =
          compare(anyres_preprocess(decoded, l, opt.image_config).data, pixels->to_float(pixels->at(p + "pixel_values")));
      EXPECT_EQ(diff.differing, 0u) << "max |diff| " << diff.max_abs;
      // our decoder (libjpeg-turbo / stb) against PIL's decode of the same bytes
      std::vector<uint8_t> bytes = read_image_bytes(s.images[k], p);
      const RgbImage ours = decode_image(bytes.data(), bytes.size());
      ASSERT_EQ(ours.pixels.size(), decoded.pixels.size());
      int level = 0;
      for (size_t b = 0; b < ours.pixels.size(); ++b) level = std::max(level, std::abs(ours.pixels[b] - decoded.pixels[b]));
      EXPECT_EQ(level, 0) << "decoder differs from PIL by up to " << level << " levels";
      decoder_max = std::max(decoder_max, level);
    }
  }
  EXPECT_EQ(images, 9);
  std::printf("%d images: canvases, bases and pixel values exact; decoder vs PIL max %d levels\n", images, decoder_max);
}

TEST_F(NextFixture, ChatmlDirectMatchesReferenceIncludingTheMaskedLabels) {
  const ExampleOptions opt = options("chatml_direct");
  const Dataset ds = dataset();
  const json samples = read_json("expected/template_chatml_direct.json")["samples"];
  ASSERT_EQ(ds.size(), samples.size());
  for (size_t i = 0; i < ds.size(); ++i) {
    SCOPED_TRACE("sample " + std::to_string(i));
    const json& e = samples[i];
    Example ex = build_example(ds.sample(i), opt);
    EXPECT_EQ(ex.prompt, e["prompt"].get<std::string>());
    EXPECT_EQ(ex.input_ids, e["input_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(ex.labels, e["labels"].get<std::vector<int32_t>>());
    EXPECT_EQ(ex.num_target_tokens, e["num_label_tokens"].get<int>());
    // preprocess_mpt's count never matches this tokenizer: the sample is masked with the reference's warning
    const std::string warning = e["reference_warning"].get<std::string>();
    EXPECT_EQ(ex.warning.substr(0, warning.size()), warning);
    std::printf("sample %zu: %zu ids, ours: %s\n", i, ex.input_ids.size(), ex.warning.c_str());
  }
}

TEST_F(NextFixture, TileBudgetAndModelMaxLengthOnSampleThree) {
  ExampleOptions opt = options("mistral_instruct");
  const Dataset ds = dataset();
  // sample 3: 63 ids, images of 68 + 42 + 36 positions -> 206 (P = 4, 4, 3)
  opt.model_max_length = 205;
  const std::string e = error_of([&] { build_example(ds.sample(3), opt); });
  EXPECT_TRUE(contains(e, "sample 3 (id 'n3_three_images_base64_inline_tags'): too long: 206 positions")) << e;
  EXPECT_TRUE(contains(e, "68 + 42 + 36")) << e;
  // 6 tiles: image 0 keeps its 4 (4 + 1 + 1), images 1 and 2 become base + image_newline (17 each)
  opt.anyres->max_tiles_per_sample = 6;
  Example ex = build_example(ds.sample(3), opt);
  EXPECT_EQ(ex.length_with_images, 60 + 68 + 17 + 17);
  EXPECT_EQ(ex.images_base_only, 2);
  ASSERT_EQ(ex.pixels.size(), 3u);
  EXPECT_EQ(ex.pixels[1].tiles, 1);
  // a base-only image's one tile is the reference's base tile
  auto pixels = SafetensorsFile::open(dir + "/expected/pixel_values.safetensors");
  std::vector<float> base = pixels->to_float(pixels->at("sample3.image1.pixel_values"));
  base.resize(3 * 56 * 56);
  EXPECT_EQ(compare(ex.pixels[1].data, base).differing, 0u);
  EXPECT_TRUE(contains(ex.warning, "image(s) 1, 2 use the base tile only (full tiling: 11 tiles)")) << ex.warning;
}

// The pipeline takes anyres, spatial_unpad and the pinpoints from config.json; the flags override them.
TEST_F(NextFixture, PipelineReadsConfigJsonAndFlagsOverrideIt) {
  Options o;
  o.model_name_or_path = dir;
  o.data_path = dir + "/data.json";
  o.image_folder = dir + "/images";
  o.version = "mistral_instruct";
  auto p = make_data_pipeline(o, true);
  ASSERT_TRUE(p->example.anyres.has_value());
  const AnyresConfig& a = *p->example.anyres;
  EXPECT_EQ(a.pinpoints, tiny_next_config().pinpoints);
  EXPECT_EQ(a.merge, PatchMerge::kSpatialUnpad);
  EXPECT_EQ(a.tile_size, 56);
  EXPECT_EQ(a.patches_per_side, 4);
  EXPECT_EQ(build_example(p->dataset->sample(0), p->example).length_with_images, 87);

  auto with = [&](const std::string& key, const std::string& value) {
    Options v = o;
    v.set_keys.insert(key);
    if (key == "image_aspect_ratio") v.image_aspect_ratio = value;
    if (key == "mm_patch_merge_type") v.mm_patch_merge_type = value;
    if (key == "image_grid_pinpoints") v.image_grid_pinpoints = value;
    return v;
  };
  EXPECT_FALSE(make_data_pipeline(with("image_aspect_ratio", "pad"), false)->example.anyres.has_value());
  EXPECT_EQ(make_data_pipeline(with("mm_patch_merge_type", "flat"), false)->example.anyres->merge, PatchMerge::kFlat);
  EXPECT_EQ(make_data_pipeline(with("image_grid_pinpoints", "(1x1),...,(2x2)"), false)->example.anyres->pinpoints,
            (std::vector<ImageSize>{{56, 56}, {56, 112}, {112, 56}, {112, 112}}));
  const std::string max9 = error_of([&] { make_data_pipeline(with("image_aspect_ratio", "anyres_max_9"), false); });
  EXPECT_TRUE(contains(max9, "anyres_max_9") && contains(max9, "not supported yet")) << max9;
  const std::string bad = error_of([&] { make_data_pipeline(with("image_grid_pinpoints", "[(56, 100)]"), false); });
  EXPECT_TRUE(contains(bad, "not a multiple of the tile size 56")) << bad;
  const std::string merge = error_of([&] { make_data_pipeline(with("mm_patch_merge_type", "unpad"), false); });
  EXPECT_TRUE(contains(merge, "--mm_patch_merge_type")) << merge;
}
