// LLaVA-1.6 (LLaVA-NeXT) on the model and training side, against ../shared/fixtures/llava-next-tiny (LLaVA
// c121f04 + transformers 4.37.2 MistralForCausalLM): the anyres merge (flat / spatial / spatial_unpad with
// image_newline), the collated tiles, losses and logits, both 6-step trajectories through the real Trainer,
// both checkpoint layouts (original llava_mistral, HF llava_next), Mistral's sliding window, bad inputs, plan.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llava/dist/plan.h"
#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/model/llava.h"
#include "llava/pipeline.h"
#include "llava/safetensors.h"
#include "llava/train/batch.h"
#include "llava/train/evaluate.h"
#include "llava/train/loader.h"
#include "llava/train/stage.h"
#include "llava/train/trainer.h"
#include "test_train_support.h"

using namespace llava;
using namespace llava::testing;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string next_dir() { return fixture("llava-next-tiny"); }

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

torch::Tensor st_tensor(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo& info = f.at(name);
  std::vector<float> v = f.to_float(info);
  return torch::from_blob(v.data(), info.shape, torch::kFloat).clone();
}

struct NextImage {
  ImageSize size;
  int64_t tiles = 0, merged_len = 0;
  std::vector<int> grid_wh, kept_rows, kept_cols, map_after;
};

struct NextSample {
  int index = 0;
  std::string id;
  std::vector<int64_t> input_ids, labels;
  double loss = 0;
  int64_t merged_seq_len = 0;
  std::vector<int64_t> argmax3;
  std::vector<std::pair<int64_t, int64_t>> offsets;  // [start, end) of each image block in the merged sequence
  std::vector<NextImage> images;
};

const json& samples_json() {
  static json j = json::parse(read_file(next_dir() + "/expected/samples.json"));
  return j;
}

const std::vector<NextSample>& samples() {
  static std::vector<NextSample> out = [] {
    std::vector<NextSample> v;
    for (const auto& x : samples_json()["samples"]) {
      NextSample s;
      s.index = x["index"].get<int>();
      s.id = x["id"].get<std::string>();
      s.input_ids = x["input_ids"].get<std::vector<int64_t>>();
      s.labels = x["labels"].get<std::vector<int64_t>>();
      s.loss = x["loss"].get<double>();
      s.merged_seq_len = x["merged_seq_len"].get<int64_t>();
      s.argmax3 = x["logits_last3_argmax"].get<std::vector<int64_t>>();
      for (const auto& o : x["image_token_offsets_in_merged_sequence"]) s.offsets.emplace_back(o[0], o[1]);
      for (const auto& im : x["images"]) {
        NextImage i;
        i.size = {im["original_size_wh"][0].get<int>(), im["original_size_wh"][1].get<int>()};
        i.tiles = im["num_crops_incl_base"].get<int64_t>();
        i.merged_len = im["merged_len"].get<int64_t>();
        i.grid_wh = im["grid_wh"].get<std::vector<int>>();
        i.kept_rows = im["unpad_kept_rows"].get<std::vector<int>>();
        i.kept_cols = im["unpad_kept_cols"].get<std::vector<int>>();
        i.map_after = im["feature_map_hw_after_unpad"].get<std::vector<int>>();
        s.images.push_back(i);
      }
      v.push_back(s);
    }
    return v;
  }();
  return out;
}

std::shared_ptr<SafetensorsFile> pixel_file() {
  static auto f = SafetensorsFile::open(next_dir() + "/expected/pixel_values.safetensors");
  return f;
}

torch::Tensor pixels_of(int sample, size_t image) {
  return st_tensor(*pixel_file(), "sample" + std::to_string(sample) + ".image" + std::to_string(image) + ".pixel_values");
}

// A right-padded batch from the stored pixels, as the anyres collator builds it: every image's [P,3,S,S] tiles
// stacked, with its tile count and original size (text-only samples contribute none).
LlavaInputs make_batch(const std::vector<int>& idx) {
  int64_t T = 0;
  for (int i : idx) T = std::max<int64_t>(T, samples()[i].input_ids.size());
  const int64_t B = idx.size();
  LlavaInputs b;
  b.input_ids = torch::zeros({B, T}, torch::kLong);
  b.labels = torch::full({B, T}, -100, torch::kLong);
  b.attention_mask = torch::zeros({B, T}, torch::kLong);
  std::vector<torch::Tensor> tiles;
  for (int64_t r = 0; r < B; ++r) {
    const NextSample& s = samples()[idx[r]];
    const int64_t n = s.input_ids.size();
    b.input_ids[r].narrow(0, 0, n).copy_(torch::tensor(s.input_ids, torch::kLong));
    b.labels[r].narrow(0, 0, n).copy_(torch::tensor(s.labels, torch::kLong));
    b.attention_mask[r].narrow(0, 0, n).fill_(1);
    b.image_counts.push_back(static_cast<int64_t>(s.images.size()));
    for (size_t k = 0; k < s.images.size(); ++k) {
      tiles.push_back(pixels_of(s.index, k));
      b.image_tiles.push_back(s.images[k].tiles);
      b.image_sizes.push_back(s.images[k].size);
    }
  }
  if (!tiles.empty()) b.pixel_values = torch::cat(tiles, 0);
  return b;
}

LlavaForCausalLM& fixture_model() {
  static LlavaForCausalLM m = load_eval_model(next_dir());
  return m;
}

std::vector<double> per_sample_losses(LlavaForCausalLMImpl& m) {
  torch::NoGradGuard ng;
  std::vector<double> out;
  for (const auto& s : samples()) out.push_back(m.forward(make_batch({s.index})).loss().item<double>());
  return out;
}

double max_loss_diff_vs_expected(LlavaForCausalLMImpl& m) {
  double worst = 0;
  const auto losses = per_sample_losses(m);
  for (size_t i = 0; i < losses.size(); ++i) worst = std::max(worst, std::abs(losses[i] - samples()[i].loss));
  return worst;
}

Options next_train_options(const std::string& out, bool pretrain) {
  Options o = fixture_options_for(next_dir(), out, pretrain);
  o.version = "mistral_instruct";
  return o;
}

// The fixture's original names of the projector and image_newline -> our (HF) parameter names.
std::string hf_name_of(const std::string& original) {
  if (original == "model.image_newline") return "image_newline";
  if (original.rfind("model.mm_projector.0.", 0) == 0) return "multi_modal_projector.linear_1." + original.substr(21);
  if (original.rfind("model.mm_projector.2.", 0) == 0) return "multi_modal_projector.linear_2." + original.substr(21);
  return original;
}

void check_trajectory(bool pretrain) {
  const std::string name = pretrain ? "pretrain" : "finetune";
  const json expected = json::parse(read_file(next_dir() + "/expected/train_" + name + ".json"));
  const std::string out = train_tmp("next_" + name);
  TrainResult r = train(next_train_options(out, pretrain));
  ASSERT_EQ(r.exit_code, 0) << r.message;
  ASSERT_EQ(r.steps.size(), 6u);
  const TrajectoryDiff worst = expect_trajectory(expected, r.steps, 2e-3, name);
  // the final model directory (HF llava_next names) against the fixture's projector + image_newline
  auto want = read_tensors(next_dir() + "/expected/train_" + name + "_final_projector.safetensors");
  auto got = read_tensors(out);
  double max_final = 0;
  for (const auto& [tensor, value] : want) {
    const std::string ours = hf_name_of(tensor);
    ASSERT_TRUE(got.count(ours)) << ours;
    const double d = max_abs_diff(got.at(ours), value);
    EXPECT_LE(d, 1e-3) << tensor;
    max_final = std::max(max_final, d);
  }
  std::printf("  %s: max |loss diff| %.2e, max rel grad_norm diff %.2e, max |lr diff| %.2e, "
              "max |final projector / image_newline diff| %.2e\n",
              name.c_str(), worst.loss, worst.grad_norm, worst.learning_rate, max_final);
  // what did not train stayed put: the vision tower always; the LLM and image_newline in the projector-only stage
  const json cfg = json::parse(read_file(out + "/config.json"));
  EXPECT_EQ(cfg["model_type"], "llava_next");
  LoadedLlava initial = load_llava(next_dir());
  for (const auto& [param, value] : base_model_parameters(*initial.model)) {
    const bool trainable =
        param.rfind("multi_modal_projector.", 0) == 0 ||
        (!pretrain && (param.rfind("language_model.", 0) == 0 || param == "image_newline"));
    ASSERT_TRUE(got.count(param)) << param;
    if (!trainable) EXPECT_TRUE(torch::equal(got.at(param), value)) << param << " changed but is frozen";
    else EXPECT_FALSE(torch::equal(got.at(param), value)) << param << " is trainable but did not change";
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------ config

TEST(NextConfig, FixtureIsMistralAnyresSpatialUnpad) {
  LLAVA_REQUIRE_FIXTURES();
  const LlavaConfig c = LlavaConfig::from_json_file(next_dir() + "/config.json");
  EXPECT_EQ(c.text.model_type, "mistral");
  EXPECT_EQ(c.text.rope_theta, 1000000.0);
  EXPECT_EQ(c.text.sliding_window, 0);  // null: plain causal
  EXPECT_EQ(c.text.num_key_value_heads, 2);
  EXPECT_EQ(c.image_aspect_ratio, "anyres");
  EXPECT_EQ(c.mm_patch_merge_type, "spatial_unpad");
  EXPECT_TRUE(c.has_image_newline());
  EXPECT_TRUE(c.unfreeze_mm_vision_tower);
  const std::vector<ImageSize> want = {{56, 112}, {112, 56}, {112, 112}, {56, 168}, {168, 56}};  // (w, h)
  EXPECT_EQ(c.image_grid_pinpoints, want);
  EXPECT_EQ(c.vision.image_size, 56);
  const AnyresConfig a = c.anyres_config();
  EXPECT_EQ(a.tile_size, 56);
  EXPECT_EQ(a.patches_per_side, 4);
  EXPECT_EQ(a.tile_positions, 16);
  EXPECT_EQ(detect_model_dir_kind(next_dir()), "llava_llama");
}

TEST(NextConfig, MistralDefaultsAndSlidingWindowKeys) {
  const std::string dir = train_tmp("next_mistral_cfg");
  auto parse = [&](const json& j) {
    std::ofstream(dir + "/config.json") << j.dump();
    return LlamaConfig::from_json_file(dir + "/config.json");
  };
  const LlamaConfig d = parse({{"model_type", "mistral"}});  // MistralConfig() of 4.37.2
  EXPECT_EQ(d.sliding_window, 4096);
  EXPECT_EQ(d.num_key_value_heads, 8);
  EXPECT_EQ(d.intermediate_size, 14336);
  EXPECT_EQ(d.max_position_embeddings, 131072);
  EXPECT_EQ(parse({{"model_type", "mistral"}, {"sliding_window", nullptr}}).sliding_window, 0);
  EXPECT_EQ(parse({{"model_type", "mistral"}, {"sliding_window", 7}}).sliding_window, 7);
  EXPECT_EQ(parse({{"model_type", "llama"}, {"sliding_window", 7}}).sliding_window, 0);  // LLaMA has none
  EXPECT_THROW(parse({{"model_type", "mistral"}, {"sliding_window", -1}}), Error);
  const LlamaConfig w = parse({{"model_type", "mistral"}, {"sliding_window", 7}, {"hidden_size", 64},
                               {"num_attention_heads", 4}, {"num_key_value_heads", 2}});
  std::ofstream(dir + "/config.json") << w.to_json_string();
  const json back = json::parse(read_file(dir + "/config.json"));
  EXPECT_EQ(back["model_type"], "mistral");
  EXPECT_EQ(back["architectures"][0], "MistralForCausalLM");
  EXPECT_EQ(back["sliding_window"], 7);
  EXPECT_EQ(LlamaConfig::from_json_file(dir + "/config.json").sliding_window, 7);
}

// ------------------------------------------------------------------------------------------ the merge

TEST(NextFixture, VisionProjectedAndMergedFeatures) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  auto feats = SafetensorsFile::open(next_dir() + "/expected/image_features.safetensors");
  const AnyresConfig geometry = m.config().anyres_config();
  torch::NoGradGuard ng;
  double worst_v = 0, worst_p = 0, worst_m = 0;
  for (const auto& s : samples()) {
    LlavaInputs b = make_batch({s.index});
    MergedInputs merged = m.merge_inputs(b);
    ASSERT_EQ(merged.lengths[0], s.merged_seq_len) << s.id;
    for (size_t k = 0; k < s.images.size(); ++k) {
      const NextImage& im = s.images[k];
      const std::string p = "sample" + std::to_string(s.index) + ".image" + std::to_string(k);
      // the geometry the model's config gives this image (anyres.h's arithmetic)
      const AnyresImageLayout l = anyres_image_layout(im.size, geometry);
      EXPECT_EQ(l.grid_w, im.grid_wh[0]) << p;
      EXPECT_EQ(l.grid_h, im.grid_wh[1]) << p;
      EXPECT_EQ(l.num_tiles, im.tiles) << p;
      EXPECT_EQ(l.kept.row_begin, im.kept_rows[0]) << p;
      EXPECT_EQ(l.kept.row_end, im.kept_rows[1]) << p;
      EXPECT_EQ(l.kept.col_begin, im.kept_cols[0]) << p;
      EXPECT_EQ(l.kept.col_end, im.kept_cols[1]) << p;
      EXPECT_EQ(l.positions, im.merged_len) << p;
      const torch::Tensor px = pixels_of(s.index, k);
      const torch::Tensor v = m.vision_features(px), f = m.image_features(px);
      const torch::Tensor ev = st_tensor(*feats, p + ".vision_features"), ef = st_tensor(*feats, p + ".projected_features");
      const torch::Tensor em = st_tensor(*feats, p + ".merged_features");
      ASSERT_EQ(v.sizes(), ev.sizes()) << p;
      ASSERT_EQ(f.sizes(), ef.sizes()) << p;
      const auto [begin, end] = s.offsets[k];
      ASSERT_EQ(end - begin, im.merged_len) << p;
      ASSERT_EQ(em.size(0), im.merged_len) << p;
      const torch::Tensor block = merged.inputs_embeds[0].narrow(0, begin, end - begin);
      const double dv = max_abs_diff(v, ev), dp = max_abs_diff(f, ef), dm = max_abs_diff(block, em);
      std::printf("  %s %dx%d: grid %dx%d, %lld tiles, kept rows [%d, %d) cols [%d, %d), merged %lld rows at [%lld, %lld):"
                  " vision %.2e projected %.2e merged %.2e\n",
                  p.c_str(), im.size.width, im.size.height, l.grid_w, l.grid_h, static_cast<long long>(l.num_tiles),
                  l.kept.row_begin, l.kept.row_end, l.kept.col_begin, l.kept.col_end,
                  static_cast<long long>(im.merged_len), static_cast<long long>(begin), static_cast<long long>(end), dv,
                  dp, dm);
      EXPECT_LT(dv, 1e-4) << p;
      EXPECT_LT(dp, 1e-4) << p;
      EXPECT_LT(dm, 1e-4) << p;
      worst_v = std::max(worst_v, dv);
      worst_p = std::max(worst_p, dp);
      worst_m = std::max(worst_m, dm);
      // the block's shape: base tile rows, then each kept row + image_newline
      const int64_t rows = im.map_after[0], cols = im.map_after[1];
      for (int64_t r = 0; r < rows; ++r)
        EXPECT_TRUE(torch::equal(block[16 + r * (cols + 1) + cols], m.image_newline)) << p << " row " << r;
    }
  }
  std::printf("  worst: vision %.2e, projected %.2e, merged %.2e\n", worst_v, worst_p, worst_m);
}

TEST(NextFixture, PerSampleLossAndLogitsLast3) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  auto logits_file = SafetensorsFile::open(next_dir() + "/expected/logits_last3.safetensors");
  torch::NoGradGuard ng;
  double worst_loss = 0, worst_logits = 0;
  for (const auto& s : samples()) {
    LlavaOutput o = m.forward(make_batch({s.index}), /*return_logits=*/true);
    const int64_t L = o.logits.size(1);
    EXPECT_EQ(L, s.merged_seq_len) << s.id;
    const torch::Tensor last3 = o.logits[0].narrow(0, L - 3, 3);
    const torch::Tensor want = st_tensor(*logits_file, "sample" + std::to_string(s.index) + ".logits_last3");
    const double dl = std::abs(o.loss().item<double>() - s.loss), dlog = max_abs_diff(last3, want);
    std::printf("  sample %d (%s): loss %.6f expected %.6f |diff| %.2e; logits_last3 max|diff| %.2e\n", s.index,
                s.id.c_str(), o.loss().item<double>(), s.loss, dl, dlog);
    EXPECT_LT(dl, 1e-4) << s.id;
    EXPECT_LT(dlog, 1e-4) << s.id;
    const torch::Tensor am = last3.argmax(-1);
    for (int k = 0; k < 3; ++k) EXPECT_EQ(am[k].item<int64_t>(), s.argmax3[k]) << s.id;
    worst_loss = std::max(worst_loss, dl);
    worst_logits = std::max(worst_logits, dlog);
  }
  std::printf("  worst: loss %.2e, logits %.2e\n", worst_loss, worst_logits);
}

TEST(NextFixture, TrainingBatchesOnInitialWeights) {
  LLAVA_REQUIRE_FIXTURES();
  // Steps 1 and 2 of both trajectories see the initial weights (step 1's lr is 0). Batch [2, 3] starts with the
  // text-only sample, whose dummy image takes slot 0 of the reference's image list: the markers of sample 3 must
  // still bind to sample 3's images.
  auto& m = *fixture_model();
  const json tr = json::parse(read_file(next_dir() + "/expected/train_finetune.json"));
  torch::NoGradGuard ng;
  for (int step = 0; step < 2; ++step) {
    const auto idx = tr["steps"][step]["batch_sample_indices"].get<std::vector<int>>();
    const double want = tr["steps"][step]["loss"].get<double>();
    LlavaOutput o = m.forward(make_batch(idx));
    std::printf("  step %d batch [%d, %d]: loss %.6f expected %.6f |diff| %.2e\n", step + 1, idx[0], idx[1],
                o.loss().item<double>(), want, std::abs(o.loss().item<double>() - want));
    EXPECT_NEAR(o.loss().item<double>(), want, 1e-4);
    for (size_t r = 0; r < idx.size(); ++r) EXPECT_EQ(o.lengths[r], samples()[idx[r]].merged_seq_len);
  }
  // all six at once: every per-sample loss inside the padded batch
  LlavaOutput all = m.forward(make_batch({0, 1, 2, 3, 4, 5}));
  for (int i = 0; i < 6; ++i) {
    const double per = all.per_sample_loss_sum[i].item<double>() / all.per_sample_targets[i].item<int64_t>();
    EXPECT_NEAR(per, samples()[i].loss, 1e-4) << "sample " << i;
  }
}

TEST(NextFixture, CollatedPipelineBatchesEqualTheStoredPixels) {
  LLAVA_REQUIRE_FIXTURES();
  Options o = next_train_options(train_tmp("next_collate"), false);
  auto data = make_data_pipeline(o, /*needs_dataset=*/true);
  ASSERT_TRUE(data->example.anyres.has_value());
  for (const std::vector<int64_t>& idx : {std::vector<int64_t>{0, 1}, {2, 3}, {4, 5}}) {
    Batch b = build_batch(*data->dataset, data->example, idx, data->tokenizer.pad_id());
    ASSERT_EQ(b.size(), 2) << (b.errors.empty() ? "" : b.errors[0]);
    LlavaInputs want = make_batch({static_cast<int>(idx[0]), static_cast<int>(idx[1])});
    EXPECT_EQ(b.inputs.image_tiles, want.image_tiles);
    EXPECT_EQ(b.inputs.image_sizes, want.image_sizes);
    EXPECT_TRUE(torch::equal(b.inputs.input_ids.masked_select(b.inputs.attention_mask.to(torch::kBool)),
                             want.input_ids.masked_select(want.attention_mask.to(torch::kBool))));
    ASSERT_EQ(b.inputs.pixel_values.sizes(), want.pixel_values.sizes());
    const double d = max_abs_diff(b.inputs.pixel_values, want.pixel_values);
    std::printf("  batch [%lld, %lld]: tiles %s, pixel_values %s max|diff| %.2e\n", static_cast<long long>(idx[0]),
                static_cast<long long>(idx[1]), c10::str(b.inputs.image_tiles).c_str(),
                c10::str(b.inputs.pixel_values.sizes()).c_str(), d);
    EXPECT_LE(d, 1e-6);
  }
}

TEST(NextFixture, EvalOnTheAnyresModel) {
  LLAVA_REQUIRE_FIXTURES();
  Options o = next_train_options(train_tmp("next_eval"), false);
  auto data = make_data_pipeline(o, /*needs_dataset=*/true);
  auto& m = *fixture_model();
  EvalOptions eo;
  eo.batch_size = 4;
  eo.pad_id = data->tokenizer.pad_id();
  double worst = 0;
  EvalSummary s = evaluate(m, *data->dataset, data->example, eo, [&](const EvalSample& r) {
    ASSERT_TRUE(r.ok) << r.error;
    const double loss = r.loss_sum / r.num_target_tokens;
    worst = std::max(worst, std::abs(loss - samples()[r.index].loss));
  });
  std::printf("  eval from the image files, batches of 4: %lld samples, max |loss diff| %.2e\n",
              static_cast<long long>(s.samples), worst);
  EXPECT_EQ(s.samples, 6);
  EXPECT_LT(worst, 1e-4);
}

// ------------------------------------------------------------------------------------------ merge types

TEST(NextMerge, FlatSpatialAndUnpadLayouts) {
  LLAVA_REQUIRE_FIXTURES();
  // sample 0's image (90x50, grid 2x1, 3 tiles) under each merge type, against index arithmetic written here
  LoadedLlava l = load_llava(next_dir());
  auto& m = *l.model;
  torch::NoGradGuard ng;
  LlavaInputs b = make_batch({0});
  const torch::Tensor f = m.image_features(b.pixel_values);  // [3, 16, 64]
  const int64_t begin = samples()[0].offsets[0].first;
  auto block_for = [&](const std::string& merge, int64_t len) {
    m.configure_images(AnyresConfig{m.config().image_grid_pinpoints, 56, 4, 16, parse_patch_merge(merge), 0},
                       "anyres", 0);
    MergedInputs mi = m.merge_inputs(b);
    return mi.inputs_embeds[0].narrow(0, begin, len);
  };
  // flat: every tile's 16 rows, base first
  torch::Tensor flat = block_for("flat", 48);
  EXPECT_TRUE(torch::equal(flat, f.reshape({48, 64})));
  // spatial: base, then the 4 x 8 map row by row (row r, column c = tile 1 + c / 4, patch (r % 4) * 4 + c % 4)
  torch::Tensor spatial = block_for("spatial", 48);
  std::vector<torch::Tensor> want = {f[0]};
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c) want.push_back(f[1 + c / 4][(r % 4) * 4 + c % 4].unsqueeze(0));
  EXPECT_TRUE(torch::equal(spatial, torch::cat(want, 0)));
  // spatial_unpad: nothing unpadded for 90x50 on a 4 x 8 map, a newline after each of the 4 rows: 16 + 4 * 9
  torch::Tensor unpad = block_for("spatial_unpad", 52);
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(torch::equal(unpad.narrow(0, 16 + r * 9, 8), torch::cat(want, 0).narrow(0, 16 + r * 8, 8)));
    EXPECT_TRUE(torch::equal(unpad[16 + r * 9 + 8], m.image_newline));
  }
  std::printf("  90x50: flat 48, spatial 48, spatial_unpad 52 rows, as written out\n");
}

TEST(NextMerge, ThinImageKeepsZeroRowsAndBaseOnlyImageGetsOneNewline) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  torch::NoGradGuard ng;
  // anyres_cases.json's 1000x10: best 168x56, 3 crops, unpad keeps 0 rows: the block is the base tile alone
  const json cases = json::parse(read_file(next_dir() + "/expected/anyres_cases.json"));
  int64_t want_len = -1;
  for (const auto& c : cases["cases"])
    if (c["pinpoints"] == "this_fixture" && c["original_size_wh"] == json{1000, 10}) want_len = c["merged_len"];
  ASSERT_EQ(want_len, 16);
  torch::manual_seed(5);
  auto one_image = [](ImageSize size, int64_t tiles) {
    LlavaInputs b;
    b.input_ids = torch::tensor({1, 518, -200, 29871, 13, 22}, torch::kLong).view({1, 6});
    b.labels = torch::tensor({-100, -100, -100, -100, 13, 22}, torch::kLong).view({1, 6});
    b.pixel_values = torch::randn({tiles, 3, 56, 56});
    b.image_tiles = {tiles};
    b.image_sizes = {size};
    return b;
  };
  LlavaInputs thin = one_image({1000, 10}, 4);
  MergedInputs mt = m.merge_inputs(thin);
  EXPECT_EQ(mt.lengths[0], 5 + want_len);
  const torch::Tensor base = m.image_features(thin.pixel_values)[0];
  EXPECT_TRUE(torch::equal(mt.inputs_embeds[0].narrow(0, 2, 16), base));
  EXPECT_TRUE(std::isfinite(m.forward(thin).loss().item<double>()));
  // --max_tiles_per_sample cut an image to its base tile: P = 1, base + image_newline (17 rows)
  LlavaInputs base_only = one_image({90, 50}, 1);
  MergedInputs mb = m.merge_inputs(base_only);
  EXPECT_EQ(mb.lengths[0], 5 + 17);
  EXPECT_TRUE(torch::equal(mb.inputs_embeds[0][2 + 16], m.image_newline));
  std::printf("  1000x10: %lld rows (base only, 0 kept rows); a base-only image: 17 rows\n",
              static_cast<long long>(mt.lengths[0] - 5));
}

TEST(NextMerge, BadAnyresInputsAreErrors) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  torch::NoGradGuard ng;
  LlavaInputs b = make_batch({0, 1});  // tiles 3, 4, 5
  LlavaInputs wrong_tiles = b;
  wrong_tiles.image_tiles = {3, 5, 4};  // the 40x130 image has 4 tiles under these pinpoints, not 5
  EXPECT_THROW(m.forward(wrong_tiles), Error);
  LlavaInputs fewer_sizes = b;
  fewer_sizes.image_sizes.pop_back();
  EXPECT_THROW(m.forward(fewer_sizes), Error);
  LlavaInputs fewer_pixels = b;
  fewer_pixels.pixel_values = b.pixel_values.narrow(0, 0, 11);
  EXPECT_THROW(m.forward(fewer_pixels), Error);
  LlavaInputs missing_image = b;
  missing_image.image_tiles.pop_back();
  missing_image.image_sizes.pop_back();
  missing_image.pixel_values = b.pixel_values.narrow(0, 0, 7);
  EXPECT_THROW(m.forward(missing_image), Error);  // 3 markers, 2 images
  // anyres inputs for a model that was not told it is anyres
  LoadedLlava square = load_llava(next_dir());
  square.model->configure_images(std::nullopt, "square", 0);
  try {
    square.model->forward(b);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    std::printf("  error: %s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("anyres"), std::string::npos);
  }
  // the same model on one-tile-per-image inputs (LLaVA's 4-D branch: each image its 16 patch rows)
  LlavaInputs four_d = b;
  four_d.image_tiles.clear();
  four_d.image_sizes.clear();
  four_d.pixel_values = torch::cat({b.pixel_values[0].unsqueeze(0), b.pixel_values[3].unsqueeze(0),
                                    b.pixel_values[7].unsqueeze(0)});
  EXPECT_EQ(square.model->merge_inputs(four_d).lengths[0], 36 - 1 + 16);
}

// ------------------------------------------------------------------------------------------ pinpoints

TEST(NextConfig, BadPinpointsAreErrors) {
  LLAVA_REQUIRE_FIXTURES();
  const json base = json::parse(read_file(next_dir() + "/config.json"));
  auto load_with = [&](const json& pinpoints, const std::vector<std::string>& needles) {
    const std::string dir = train_tmp("next_bad_pinpoints");
    json c = base;
    c["image_grid_pinpoints"] = pinpoints;
    c["mm_vision_tower"] = fs::absolute(next_dir() + "/clip-vit-tiny-patch14-56").string();
    std::ofstream(dir + "/config.json") << c.dump();
    try {
      LlavaConfig::from_json_file(dir + "/config.json");
      ADD_FAILURE() << "no error for " << pinpoints.dump();
    } catch (const Error& e) {
      std::printf("  %s -> %s\n", pinpoints.dump().c_str(), e.what());
      for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
    }
  };
  load_with(json::array({json{56, 112}, json{50, 112}}), {"(50, 112)", "multiple of the tile size 56"});
  load_with(json::array(), {"empty"});
  load_with("[(56, 112), (112,", {"image_grid_pinpoints"});
  // the model refuses a data-side tiling that does not fit its tower
  LoadedLlava l = load_llava(next_dir());
  EXPECT_THROW(l.model->configure_images(AnyresConfig{{{672, 336}}, 336, 24, 576, PatchMerge::kSpatialUnpad, 0},
                                         "anyres", 0),
               Error);
}

TEST(NextData, SampleWhoseTilesExceedModelMaxLengthIsSkipped) {
  LLAVA_REQUIRE_FIXTURES();
  Options o = next_train_options(train_tmp("next_too_long"), false);
  o.model_max_length = 150;  // samples 1 (176), 3 (206) and 4 (218 positions) no longer fit
  auto data = make_data_pipeline(o, /*needs_dataset=*/true);
  Batch b = build_batch(*data->dataset, data->example, {0, 1, 2, 3, 4, 5}, data->tokenizer.pad_id());
  EXPECT_EQ(b.sample_indices, (std::vector<int64_t>{0, 2, 5}));
  ASSERT_EQ(b.errors.size(), 3u);
  for (const auto& e : b.errors) {
    std::printf("  %s\n", e.c_str());
    EXPECT_NE(e.find("too long"), std::string::npos) << e;
    EXPECT_NE(e.find("--max_tiles_per_sample"), std::string::npos) << e;
  }
  // what is left trains: the merged lengths are the fixture's
  LlavaOutput out = fixture_model()->forward(b.inputs);
  EXPECT_EQ(out.lengths, (std::vector<int64_t>{87, 38, 122}));
}

// ------------------------------------------------------------------------------------------ training

TEST(NextTrain, FinetuneTrajectoryMatchesHfTrainer) {
  LLAVA_REQUIRE_FIXTURES();
  check_trajectory(/*pretrain=*/false);
}

TEST(NextTrain, PretrainTrajectoryMatchesHfTrainer) {
  LLAVA_REQUIRE_FIXTURES();
  check_trajectory(/*pretrain=*/true);
}

TEST(NextTrain, ImageNewlineFollowsLlavasStageRules) {
  LLAVA_REQUIRE_FIXTURES();
  LoadedLlava l = load_llava(next_dir());
  auto trains_newline = [&](StageOptions s) {
    apply_stage(*l.model, s);
    return l.model->image_newline.requires_grad();
  };
  EXPECT_TRUE(trains_newline({}));  // finetune: 26 tensors, image_newline among them
  StageOptions pretrain;
  pretrain.tune_mm_mlp_adapter = true;
  EXPECT_FALSE(trains_newline(pretrain));
  StageOptions frozen_llm;
  frozen_llm.freeze_backbone = true;
  EXPECT_FALSE(trains_newline(frozen_llm));
  StageOptions lora;
  lora.lora_enable = true;
  EXPECT_FALSE(trains_newline(lora));
  StageOptions frozen_projector;
  frozen_projector.freeze_mm_mlp_adapter = true;
  EXPECT_TRUE(trains_newline(frozen_projector));
  apply_stage(*l.model, {});
  int trainable = 0;
  for (const auto& p : l.model->parameters()) trainable += p.requires_grad();
  const json ft = json::parse(read_file(next_dir() + "/expected/train_finetune.json"));
  EXPECT_EQ(trainable, static_cast<int>(ft["trainable_parameters"].size()));
}

TEST(NextTrain, FreshImageNewlineOnAModelWithoutOne) {
  // A LLaVA-1.5-shaped model (no image_newline) told to train spatial_unpad anyres gets one, N(0, 1/hidden),
  // and saves as llava_next with it.
  LlavaConfig c = tiny_config();
  LlavaForCausalLM m = init_random_model(c, 3);
  EXPECT_FALSE(m->image_newline.defined());
  AnyresConfig a{{{28, 56}, {56, 28}}, 28, 2, 4, PatchMerge::kSpatialUnpad, 0};
  const auto notes = m->configure_images(a, "anyres", 11);
  ASSERT_TRUE(m->image_newline.defined());
  EXPECT_EQ(m->image_newline.size(0), 32);
  for (const auto& n : notes) std::printf("  note: %s\n", n.c_str());
  ASSERT_EQ(notes.size(), 2u);
  EXPECT_NE(notes[1].find("image_newline freshly initialised"), std::string::npos);
  const double std = m->image_newline.std().item<double>();
  EXPECT_GT(std, 0.05);
  EXPECT_LT(std, 0.4);  // 1/sqrt(32) = 0.18
  const std::string dir = train_tmp("next_fresh_newline") + "/model";
  save_hf_llava(*m, dir);
  LoadedLlava back = load_llava(dir);
  EXPECT_EQ(back.format, "llava_next");
  EXPECT_TRUE(torch::equal(back.model->image_newline, m->image_newline));
  EXPECT_EQ(back.config.image_grid_pinpoints, a.pinpoints);
  EXPECT_EQ(back.config.mm_patch_merge_type, "spatial_unpad");
}

// ------------------------------------------------------------------------------------------ checkpoints

TEST(NextCheckpoint, HfLlavaNextAndOriginalLayoutsRoundTrip) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  const auto expected_losses = per_sample_losses(m);
  const json params = json::parse(read_file(next_dir() + "/expected/parameters.json"));
  const std::string root = train_tmp("next_layouts");

  // original LLaVA-1.6 (llava_mistral): the fixture's own tensor names and config fields
  save_original_llava(m, root + "/original");
  const json oc = json::parse(read_file(root + "/original/config.json"));
  EXPECT_EQ(oc["model_type"], "llava_mistral");
  EXPECT_EQ(oc["architectures"][0], "LlavaMistralForCausalLM");
  EXPECT_EQ(oc["image_aspect_ratio"], "anyres");
  EXPECT_EQ(oc["mm_patch_merge_type"], "spatial_unpad");
  EXPECT_EQ(oc["image_grid_pinpoints"], json::parse("[[56,112],[112,56],[112,112],[56,168],[168,56]]"));
  EXPECT_EQ(oc["rope_theta"], 1000000.0);
  EXPECT_TRUE(oc["sliding_window"].is_null());
  EXPECT_EQ(oc["unfreeze_mm_vision_tower"], true);
  auto original = read_tensors(root + "/original");
  EXPECT_EQ(original.size(), params.size());
  for (const auto& [name, shape] : params.items()) {
    ASSERT_TRUE(original.count(name)) << name;
    EXPECT_EQ(std::vector<int64_t>(original.at(name).sizes().begin(), original.at(name).sizes().end()),
              shape["shape"].get<std::vector<int64_t>>())
        << name;
  }

  // HF LlavaNextForConditionalGeneration: the README's mapping table, pinpoints as (height, width)
  save_hf_llava(m, root + "/hf");
  const json hc = json::parse(read_file(root + "/hf/config.json"));
  EXPECT_EQ(hc["model_type"], "llava_next");
  EXPECT_EQ(hc["architectures"][0], "LlavaNextForConditionalGeneration");
  EXPECT_EQ(hc["image_grid_pinpoints"], json::parse("[[112,56],[56,112],[112,112],[168,56],[56,168]]"));
  EXPECT_EQ(hc["text_config"]["model_type"], "mistral");
  EXPECT_TRUE(hc["text_config"]["sliding_window"].is_null());
  EXPECT_EQ(hc["vision_feature_select_strategy"], "default");
  EXPECT_FALSE(hc.contains("mm_patch_merge_type"));  // stock LlavaNext: spatial_unpad, anyres
  auto hf = read_tensors(root + "/hf");
  EXPECT_EQ(hf.size(), params.size());
  for (const auto& [name, shape] : params.items()) {
    std::string n = name;
    if (n == "lm_head.weight") n = "language_model.lm_head.weight";
    else if (n == "model.image_newline") n = "image_newline";
    else if (n.rfind("model.mm_projector.", 0) == 0) n = hf_name_of(n);
    else if (n.rfind("model.vision_tower.vision_tower.", 0) == 0) n = "vision_tower." + n.substr(32);
    else n = "language_model." + n;
    ASSERT_TRUE(hf.count(n)) << name << " -> " << n;
    EXPECT_TRUE(torch::equal(hf.at(n), original.at(name))) << n;
  }

  for (const std::string layout : {"original", "hf"}) {
    LoadedLlava back = load_llava(root + "/" + layout);
    back.model->eval();
    EXPECT_EQ(back.config.image_grid_pinpoints, m.config().image_grid_pinpoints) << layout;
    EXPECT_EQ(back.config.text.rope_theta, 1000000.0) << layout;
    const auto losses = per_sample_losses(*back.model);
    double worst = 0;
    for (size_t i = 0; i < losses.size(); ++i) worst = std::max(worst, std::abs(losses[i] - expected_losses[i]));
    std::printf("  %s (%s): reloaded, max |loss diff| vs the fixture model %.2e\n", layout.c_str(), back.format.c_str(),
                worst);
    EXPECT_EQ(worst, 0.0) << layout;
  }
  // and the reloaded HF copy writes the same original layout back
  LoadedLlava hf_back = load_llava(root + "/hf");
  save_original_llava(*hf_back.model, root + "/original2");
  auto original2 = read_tensors(root + "/original2");
  for (const auto& [name, t] : original) EXPECT_TRUE(torch::equal(t, original2.at(name))) << name;
  const std::vector<ImageSize> hw = image_sizes_from_hf(torch::tensor({50, 90, 130, 40}).view({2, 2}));
  EXPECT_EQ(hw, (std::vector<ImageSize>{{90, 50}, {40, 130}}));  // HF's (height, width) -> LLaVA's (w, h)
}

TEST(NextCheckpoint, VisionTowerFromTheCheckpointOrFromMmVisionTower) {
  LLAVA_REQUIRE_FIXTURES();
  const double base = max_loss_diff_vs_expected(*fixture_model());
  std::printf("  fixture dir (tower in the checkpoint): max |loss diff| %.2e\n", base);
  EXPECT_LT(base, 1e-4);
  const std::string root = train_tmp("next_tower");
  // 1. no tower in the checkpoint: mm_vision_tower, relative to the model dir
  const std::string no_tower = root + "/no_tower";
  fs::create_directories(no_tower);
  fs::copy_file(next_dir() + "/config.json", no_tower + "/config.json");
  fs::copy(next_dir() + "/clip-vit-tiny-patch14-56", no_tower + "/clip-vit-tiny-patch14-56");
  {
    auto f = SafetensorsFile::open(next_dir() + "/model.safetensors");
    std::vector<TensorToWrite> ts;
    for (const auto& info : f->tensors())
      if (info.name.rfind("model.vision_tower.", 0) != 0)
        ts.push_back(TensorToWrite{info.name, info.dtype, info.shape, f->data(info), info.end - info.begin});
    write_safetensors(no_tower + "/model.safetensors", ts);
  }
  LoadedLlava a = load_llava(no_tower);
  a.model->eval();
  const double da = max_loss_diff_vs_expected(*a.model);
  std::printf("  tower from mm_vision_tower (relative): max |loss diff| %.2e\n", da);
  EXPECT_LT(da, 1e-4);
  // 2. unfreeze_mm_vision_tower: the checkpoint's copy wins over a --vision_tower whose weights differ
  const std::string other = root + "/other_clip";
  fs::create_directories(other);
  fs::copy_file(next_dir() + "/clip-vit-tiny-patch14-56/config.json", other + "/config.json");
  {
    auto f = SafetensorsFile::open(next_dir() + "/clip-vit-tiny-patch14-56/model.safetensors");
    std::vector<TensorToWrite> ts;
    std::vector<std::vector<float>> keep;
    for (const auto& info : f->tensors()) {
      keep.push_back(f->to_float(info));
      for (float& x : keep.back()) x *= 0.5f;
      ts.push_back(TensorToWrite{info.name, DType::F32, info.shape, keep.back().data(), keep.back().size() * 4});
    }
    write_safetensors(other + "/model.safetensors", ts);
  }
  LoadOptions lo;
  lo.vision_tower = other;
  LoadedLlava b = load_llava(next_dir(), lo);
  b.model->eval();
  bool noted = false;
  for (const auto& n : b.notes) noted = noted || n.find("unfreeze_mm_vision_tower") != std::string::npos;
  EXPECT_TRUE(noted);
  EXPECT_LT(max_loss_diff_vs_expected(*b.model), 1e-4);
  // without unfreeze_mm_vision_tower (a v1.5-style config) --vision_tower's weights are used
  json cfg = json::parse(read_file(next_dir() + "/config.json"));
  cfg["unfreeze_mm_vision_tower"] = false;
  const std::string v15 = root + "/v15_style";
  fs::create_directories(v15);
  std::ofstream(v15 + "/config.json") << cfg.dump();
  fs::create_symlink(fs::absolute(next_dir() + "/model.safetensors"), v15 + "/model.safetensors");
  fs::create_symlink(fs::absolute(next_dir() + "/clip-vit-tiny-patch14-56"), v15 + "/clip-vit-tiny-patch14-56");
  LoadedLlava c = load_llava(v15, lo);
  c.model->eval();
  EXPECT_GT(max_loss_diff_vs_expected(*c.model), 1e-3);
}

TEST(NextCheckpoint, LlavaLlamaOneSixLayoutLoadsAndSaves) {
  LLAVA_REQUIRE_FIXTURES();
  // LLaVA-1.6 Vicuna is llava_llama with the same image keys and model.image_newline. The fixture's weights under
  // a llava_llama config (every LLM field written out; LLaMA has no sliding window, Mistral's is null here) are
  // the same model: the same losses.
  json cfg = json::parse(read_file(next_dir() + "/config.json"));
  cfg["model_type"] = "llava_llama";
  cfg["architectures"] = {"LlavaLlamaForCausalLM"};
  cfg.erase("sliding_window");
  const std::string dir = train_tmp("next_llava_llama") + "/model";
  fs::create_directories(dir);
  std::ofstream(dir + "/config.json") << cfg.dump();
  fs::create_symlink(fs::absolute(next_dir() + "/model.safetensors"), dir + "/model.safetensors");
  fs::create_symlink(fs::absolute(next_dir() + "/clip-vit-tiny-patch14-56"), dir + "/clip-vit-tiny-patch14-56");
  LoadedLlava l = load_llava(dir);
  l.model->eval();
  EXPECT_EQ(l.config.text.model_type, "llama");
  EXPECT_TRUE(l.model->image_newline.defined());
  const auto want = per_sample_losses(*fixture_model());
  const auto got = per_sample_losses(*l.model);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << "sample " << i;
  save_original_llava(*l.model, dir + "_saved");
  const json saved = json::parse(read_file(dir + "_saved/config.json"));
  EXPECT_EQ(saved["model_type"], "llava_llama");
  EXPECT_EQ(saved["mm_patch_merge_type"], "spatial_unpad");
  EXPECT_EQ(saved["image_aspect_ratio"], "anyres");
  EXPECT_TRUE(read_tensors(dir + "_saved").count("model.image_newline"));
  LoadedLlava back = load_llava(dir + "_saved");
  back.model->eval();
  const auto again = per_sample_losses(*back.model);
  for (size_t i = 0; i < again.size(); ++i) EXPECT_EQ(again[i], want[i]) << "sample " << i;
}

TEST(NextTrain, ResumeFromAnAnyresCheckpointContinuesBitForBit) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string out = train_tmp("next_resume");
  Options o = next_train_options(out, /*pretrain=*/false);
  o.save_steps = 3;
  TrainResult full = train(o);
  ASSERT_EQ(full.exit_code, 0) << full.message;
  ASSERT_TRUE(fs::exists(out + "/checkpoint-3/trainer_state.json"));
  EXPECT_EQ(json::parse(read_file(out + "/checkpoint-3/config.json"))["model_type"], "llava_next");
  Options r = o;
  r.resume_from_checkpoint = out + "/checkpoint-3";
  TrainResult resumed = train(r);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.message;
  ASSERT_EQ(resumed.steps.size(), 3u);
  for (size_t k = 0; k < 3; ++k) {
    std::printf("  step %lld: loss %.9f vs %.9f\n", static_cast<long long>(resumed.steps[k].step),
                full.steps[3 + k].loss, resumed.steps[k].loss);
    EXPECT_EQ(full.steps[3 + k].loss, resumed.steps[k].loss);
    EXPECT_EQ(full.steps[3 + k].grad_norm, resumed.steps[k].grad_norm);
  }
}

TEST(NextCli, EvalCommandOnTheFixture) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string out = train_tmp("next_cli_eval") + "/eval.jsonl";
  RunResult r = run_binary("eval --model_name_or_path " + next_dir() + " --data_path " + next_dir() +
                           "/data.json --image_folder " + next_dir() + "/images --version mistral_instruct --output " +
                           out + " --per_device_eval_batch_size 3 --device cpu");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto lines = lines_of(read_file(out));
  ASSERT_EQ(lines.size(), 6u);
  double worst = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    const json j = json::parse(lines[i]);
    worst = std::max(worst, std::abs(j["loss"].get<double>() - samples()[i].loss));
  }
  std::printf("  llava-train eval: 6 samples, max |loss diff| %.2e\n%s", worst, r.out.c_str());
  EXPECT_LT(worst, 1e-4);
}

// ------------------------------------------------------------------------------------------ Mistral window

namespace {

// transformers 4.37.2's MistralModel forward written out with loops over (query, key) pairs in float64:
// query i attends to keys j with i - W < j <= i.
torch::Tensor reference_mistral(LlamaModelImpl& model, const torch::Tensor& x, int64_t window) {
  const LlamaConfig& c = model.config();
  const int64_t L = x.size(1), hd = c.head_dim(), H = c.num_attention_heads, KV = c.num_key_value_heads;
  auto rms = [&](const torch::Tensor& h, const torch::Tensor& w) {
    return w.to(torch::kDouble) * h * torch::rsqrt(h.pow(2).mean(-1, true) + c.rms_norm_eps);
  };
  auto lin = [](const torch::Tensor& h, const std::shared_ptr<LinearLayerImpl>& p) {
    return torch::matmul(h, dynamic_cast<DenseImpl&>(*p).weight.to(torch::kDouble).t());
  };
  auto [cos, sin] = rotary_cos_sin(c, L, torch::kCPU, torch::kDouble);
  auto rope = [&](const torch::Tensor& t) {  // [L, heads, hd]
    auto half = hd / 2;
    auto rot = torch::cat({-t.narrow(-1, half, half), t.narrow(-1, 0, half)}, -1);
    return t * cos.unsqueeze(1) + rot * sin.unsqueeze(1);
  };
  torch::Tensor h = x[0].to(torch::kDouble);
  for (auto& layer : model.layers) {
    auto& att = *layer->self_attn;
    torch::Tensor n = rms(h, layer->input_layernorm->weight);
    torch::Tensor q = rope(lin(n, att.q_proj).view({L, H, hd})), k = rope(lin(n, att.k_proj).view({L, KV, hd}));
    torch::Tensor v = lin(n, att.v_proj).view({L, KV, hd});
    torch::Tensor o = torch::zeros({L, H, hd}, torch::kDouble);
    for (int64_t head = 0; head < H; ++head) {
      const int64_t kvh = head / (H / KV);
      for (int64_t i = 0; i < L; ++i) {
        const int64_t first = window > 0 ? std::max<int64_t>(0, i - window + 1) : 0;
        torch::Tensor keys = k.narrow(0, first, i - first + 1).select(1, kvh);
        torch::Tensor scores = torch::matmul(keys, q[i][head]) / std::sqrt(static_cast<double>(hd));
        torch::Tensor p = torch::softmax(scores, 0);
        o[i][head] = torch::matmul(p, v.narrow(0, first, i - first + 1).select(1, kvh));
      }
    }
    h = h + lin(o.reshape({L, H * hd}), att.o_proj);
    torch::Tensor n2 = rms(h, layer->post_attention_layernorm->weight);
    h = h + lin(torch::silu(lin(n2, layer->mlp->gate_proj)) * lin(n2, layer->mlp->up_proj), layer->mlp->down_proj);
  }
  return rms(h, model.norm->weight);
}

}  // namespace

TEST(NextMistral, SlidingWindowMatchesTheWrittenOutReference) {
  // the mask itself: W = 3 keys per query, its own included, aligned bottom-right for a shorter query block
  torch::Tensor m = sliding_window_mask(6, 6, 3, torch::kFloat, torch::kCPU);
  ASSERT_TRUE(m.defined());
  for (int64_t i = 0; i < 6; ++i)
    for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(m[0][0][i][j].item<float>() == 0.0f, i - j < 3) << i << "," << j;
  torch::Tensor step = sliding_window_mask(1, 6, 3, torch::kFloat, torch::kCPU);  // a KV-cache step: position 5
  for (int64_t j = 0; j < 6; ++j) EXPECT_EQ(step[0][0][0][j].item<float>() == 0.0f, j >= 3) << j;
  EXPECT_FALSE(sliding_window_mask(4, 4, 4, torch::kFloat, torch::kCPU).defined());  // nothing outside
  EXPECT_FALSE(sliding_window_mask(9, 9, 0, torch::kFloat, torch::kCPU).defined());

  LlamaConfig c = LlamaConfig::mistral_defaults();
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.rope_theta = 1e6;
  c.rms_norm_eps = 1e-5;
  torch::NoGradGuard ng;
  for (int64_t window : {0, 3, 5}) {
    c.sliding_window = window;
    torch::manual_seed(17);
    LlamaModel model(c);
    torch::Tensor x = torch::randn({2, 11, 32});
    torch::Tensor got = model->forward(x);
    model->set_fused_attention(false);
    torch::Tensor written = model->forward(x);
    double worst = 0;
    for (int64_t b = 0; b < 2; ++b)
      worst = std::max(worst, max_abs_diff(got[b], reference_mistral(*model, x.narrow(0, b, 1), window)));
    std::printf("  sliding_window %lld over 11 positions: max |diff| vs written-out reference %.2e (fused vs eager %.2e)\n",
                static_cast<long long>(window), worst, max_abs_diff(got, written));
    EXPECT_LT(worst, 1e-5);
    EXPECT_LT(max_abs_diff(got, written), 1e-5);
    if (window > 0) {  // the window changes the later positions only
      LlamaConfig causal = c;
      causal.sliding_window = 0;
      torch::manual_seed(17);
      LlamaModel full(causal);
      torch::Tensor f = full->forward(x);
      EXPECT_LT(max_abs_diff(f.narrow(1, 0, window), got.narrow(1, 0, window)), 1e-6);
      EXPECT_GT(max_abs_diff(f.narrow(1, window, 11 - window), got.narrow(1, window, 11 - window)), 1e-4);
    }
  }
}

// ------------------------------------------------------------------------------------------ plan, length estimate

TEST(NextPlan, LlavaOneSixPresetsAndTheConfigsRun) {
  dist::PlanModel m;
  ASSERT_TRUE(dist::plan_preset("liuhaotian/llava-v1.6-mistral-7b", m));
  EXPECT_EQ(m.kv_heads, 8);
  EXPECT_EQ(m.intermediate, 14336);
  AnyresConfig real;
  real.pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  EXPECT_EQ(m.positions_per_image, anyres_max_image_positions(real));  // 2928
  EXPECT_EQ(m.tiles_per_image, 5);
  for (const std::string name : {"mistral-7b", "vicuna-7b"}) {
    const std::string yaml = std::string(LLAVA_SOURCE_DIR) + "/configs/llava-v1.6-" + name + "-finetune.yaml";
    RunResult r = run_binary("plan --config " + yaml + " --model_name_or_path llava-v1.6-" + name + " --world_size 8");
    std::printf("%s", r.out.c_str());
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("anyres: up to 5 tiles and 2928 LLM positions per image"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("world_size 8"), std::string::npos);
    EXPECT_NE(r.out.find("this config: zero_stage"), std::string::npos);
  }
}

TEST(NextPlan, PlanReadsAnyresFromAModelDirectory) {
  LLAVA_REQUIRE_FIXTURES();
  RunResult r = run_binary("plan --model_name_or_path " + next_dir() + " --world_size 8 --model_max_length 512");
  ASSERT_EQ(r.code, 0) << r.err;
  // the fixture's largest canvas 112x112: 1 + 4 tiles, 16 + 8 rows x 9 positions
  EXPECT_NE(r.out.find("anyres: up to 5 tiles and 88 LLM positions per image"), std::string::npos) << r.out;
}

TEST(NextData, LengthEstimateUsesAnyresPositions) {
  ExampleOptions o;
  o.image_feature_positions = 576;
  EXPECT_EQ(estimated_image_positions(2, o), 1152);
  AnyresConfig a;
  a.pinpoints = {{336, 672}, {672, 336}, {672, 672}, {1008, 336}, {336, 1008}};
  o.anyres = a;
  EXPECT_EQ(estimated_image_positions(1, o), 2928);
  EXPECT_EQ(estimated_image_positions(3, o), 3 * 2928);
  o.anyres->max_tiles_per_sample = 7;  // the first image keeps 5 tiles (5 + 2 later base tiles <= 7)
  EXPECT_EQ(estimated_image_positions(3, o), 2928 + 2 * 577);
  EXPECT_EQ(image_aspect_ratio_name(o), "anyres");
}
