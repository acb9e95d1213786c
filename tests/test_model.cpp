// Model component: CLIP tower, projector, LLaMA, LLaVA merge/loss, checkpoints in and out.
// Fixture comparisons against ../shared/fixtures/llava-tiny (transformers 4.37.2 + LLaVA reference numbers).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "llava/error.h"
#include "llava/model/attention.h"
#include "llava/model/checkpoint.h"
#include "llava/model/config.h"
#include "llava/model/llava.h"
#include "llava/model/lm_loss.h"
#include "llava/model/param_init.h"
#include "llava/safetensors.h"
#include "llava/tokenizer.h"
#include "llava/torch_compat.h"
#include "test_support.h"
#include "llava/fs_util.h"

using namespace llava;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string tiny_dir() { return llava::testing::fixture("llava-tiny"); }

// Model copies add up to ~100 MB: temp_dir removes them when all tests are done.
std::string tmp_dir(const std::string& name) { return llava::testing::temp_dir(name); }

torch::Tensor st_tensor(const SafetensorsFile& f, const std::string& name) {
  const TensorInfo& info = f.at(name);
  std::vector<float> v = f.to_float(info);
  return torch::from_blob(v.data(), info.shape, torch::kFloat).clone();
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

struct Sample {
  int index;
  std::string id;
  std::vector<int64_t> input_ids, labels;
  int64_t n_images;
  double loss;
  int64_t merged_seq_len;
  std::vector<int64_t> argmax3;
};

const std::vector<Sample>& samples() {
  static std::vector<Sample> s = [] {
    std::vector<Sample> out;
    json j = json::parse(llava::testing::read_file(tiny_dir() + "/expected/samples.json"));
    for (const auto& x : j["samples"]) {
      Sample s;
      s.index = x["index"].get<int>();
      s.id = x["id"].get<std::string>();
      s.input_ids = x["input_ids"].get<std::vector<int64_t>>();
      s.labels = x["labels"].get<std::vector<int64_t>>();
      s.n_images = x["n_images"].get<int64_t>();
      s.loss = x["loss"].get<double>();
      s.merged_seq_len = x["merged_seq_len"].get<int64_t>();
      s.argmax3 = x["logits_last3_argmax"].get<std::vector<int64_t>>();
      out.push_back(s);
    }
    return out;
  }();
  return s;
}

std::shared_ptr<SafetensorsFile> pixel_file() {
  static auto f = SafetensorsFile::open(tiny_dir() + "/expected/pixel_values.safetensors");
  return f;
}

torch::Tensor pixels_of(const Sample& s) {
  if (s.n_images == 0) return torch::Tensor();
  return st_tensor(*pixel_file(), "sample" + std::to_string(s.index) + ".pixel_values");
}

// A right-padded batch as the collator builds it: pad id 0, labels -100, attention 0; images concatenated in
// sample-then-marker order.
using Batch = LlavaInputs;

Batch make_batch(const std::vector<int>& idx) {
  int64_t T = 0;
  for (int i : idx) T = std::max<int64_t>(T, samples()[i].input_ids.size());
  Batch b;
  const int64_t B = idx.size();
  b.input_ids = torch::zeros({B, T}, torch::kLong);
  b.labels = torch::full({B, T}, -100, torch::kLong);
  b.attention_mask = torch::zeros({B, T}, torch::kLong);
  std::vector<torch::Tensor> pix;
  for (int64_t r = 0; r < B; ++r) {
    const Sample& s = samples()[idx[r]];
    const int64_t n = s.input_ids.size();
    b.input_ids[r].narrow(0, 0, n).copy_(torch::tensor(s.input_ids, torch::kLong));
    b.labels[r].narrow(0, 0, n).copy_(torch::tensor(s.labels, torch::kLong));
    b.attention_mask[r].narrow(0, 0, n).fill_(1);
    b.image_counts.push_back(s.n_images);
    if (s.n_images) pix.push_back(pixels_of(s));
  }
  if (!pix.empty()) b.pixel_values = torch::cat(pix, 0);
  return b;
}

LlavaOutput run(LlavaForCausalLMImpl& m, const Batch& b, bool return_logits = true) {
  return m.forward(b, return_logits);
}

// The fixture model, loaded once (tests that modify a model load their own).
LlavaForCausalLM& fixture_model() {
  static LlavaForCausalLM m = [] {
    LoadedLlava l = load_llava(tiny_dir());
    l.model->eval();
    return l.model;
  }();
  return m;
}

std::vector<double> per_sample_losses(LlavaForCausalLMImpl& m) {
  std::vector<double> out;
  torch::NoGradGuard ng;
  for (const auto& s : samples()) out.push_back(run(m, make_batch({s.index})).loss().item<double>());
  return out;
}

double max_loss_diff_vs_expected(LlavaForCausalLMImpl& m) {
  double worst = 0;
  auto losses = per_sample_losses(m);
  for (size_t i = 0; i < losses.size(); ++i) worst = std::max(worst, std::abs(losses[i] - samples()[i].loss));
  return worst;
}

bool python_has_torch() {
  static int ok = std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0 ? 1 : 0;
  return ok == 1;
}

// Writes fixture tensors (optionally modified) to a new safetensors file.
void write_modified_fixture(const std::string& out_path,
                            const std::function<bool(const TensorInfo&, TensorToWrite&)>& edit) {
  auto f = SafetensorsFile::open(tiny_dir() + "/model.safetensors");
  std::vector<TensorToWrite> ts;
  for (const auto& info : f->tensors()) {
    TensorToWrite t{info.name, info.dtype, info.shape, f->data(info), info.end - info.begin};
    if (edit(info, t)) ts.push_back(t);
  }
  write_safetensors(out_path, ts);
}

std::string copy_fixture_config(const std::string& name) {
  std::string dir = tmp_dir(name);
  fs::copy_file(tiny_dir() + "/config.json", dir + "/config.json");
  return dir;
}

std::string expect_load_error(const std::string& dir, const std::vector<std::string>& needles) {
  try {
    load_llava(dir);
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    std::printf("  error: %s\n", msg.substr(0, 400).c_str());
    return msg;
  }
  ADD_FAILURE() << "no llava::Error loading " << dir;
  return "";
}

}  // namespace

// ---------------------------------------------------------------- fixture parity

TEST(ModelFixture, VisionAndImageFeatures) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  auto feats = SafetensorsFile::open(tiny_dir() + "/expected/image_features.safetensors");
  double worst_v = 0, worst_i = 0;
  torch::NoGradGuard ng;
  for (const auto& s : samples()) {
    if (!s.n_images) continue;
    const std::string p = "sample" + std::to_string(s.index);
    torch::Tensor px = pixels_of(s);
    torch::Tensor v = m.vision_features(px), f = m.image_features(px);
    torch::Tensor ev = st_tensor(*feats, p + ".vision_features"), ef = st_tensor(*feats, p + ".image_features");
    ASSERT_EQ(v.sizes(), ev.sizes());
    ASSERT_EQ(f.sizes(), ef.sizes());
    double dv = max_abs_diff(v, ev), df = max_abs_diff(f, ef);
    std::printf("  %s: vision_features max|diff| %.3g, image_features max|diff| %.3g\n", p.c_str(), dv, df);
    EXPECT_LT(dv, 1e-4);
    EXPECT_LT(df, 1e-4);
    worst_v = std::max(worst_v, dv);
    worst_i = std::max(worst_i, df);
  }
  std::printf("  worst: vision %.3g, image %.3g\n", worst_v, worst_i);
}

TEST(ModelFixture, PerSampleLossAndLogitsLast3) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  auto logits_file = SafetensorsFile::open(tiny_dir() + "/expected/logits_last3.safetensors");
  torch::NoGradGuard ng;
  for (const auto& s : samples()) {
    LlavaOutput o = run(m, make_batch({s.index}));
    const int64_t L = o.logits.size(1);
    EXPECT_EQ(L, s.merged_seq_len) << s.id;
    double loss = o.loss().item<double>();
    torch::Tensor last3 = o.logits[0].narrow(0, L - 3, 3);
    torch::Tensor expected = st_tensor(*logits_file, "sample" + std::to_string(s.index) + ".logits_last3");
    double dl = std::abs(loss - s.loss), dlog = max_abs_diff(last3, expected);
    std::printf("  sample %d (%s): loss %.6f expected %.6f |diff| %.3g; logits_last3 max|diff| %.3g; targets %lld\n",
                s.index, s.id.c_str(), loss, s.loss, dl, dlog, static_cast<long long>(o.num_target_tokens));
    EXPECT_LT(dl, 1e-4) << s.id;
    EXPECT_LT(dlog, 1e-4) << s.id;
    auto am = last3.argmax(-1);
    for (int k = 0; k < 3; ++k) EXPECT_EQ(am[k].item<int64_t>(), s.argmax3[k]) << s.id;
    int64_t sup = 0;
    for (size_t t = 1; t < s.labels.size(); ++t) sup += s.labels[t] != kIgnoreIndex;
    EXPECT_EQ(o.num_target_tokens, sup);
  }
}

TEST(ModelFixture, PaddedBatchLossIsTokenWeightedMean) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  torch::NoGradGuard ng;
  std::vector<int> all = {0, 1, 2, 3, 4, 5};
  LlavaOutput o = run(m, make_batch(all));
  double num = 0, den = 0;
  for (int i : all) {
    LlavaOutput one = run(m, make_batch({i}));
    num += samples()[i].loss * one.num_target_tokens;
    den += one.num_target_tokens;
    double per = o.per_sample_loss_sum[i].item<double>() / o.per_sample_targets[i].item<int64_t>();
    EXPECT_EQ(o.per_sample_targets[i].item<int64_t>(), one.num_target_tokens);
    EXPECT_NEAR(per, samples()[i].loss, 1e-4) << "sample " << i << " inside the padded batch";
    EXPECT_EQ(o.lengths[i], samples()[i].merged_seq_len);
  }
  double batch = o.loss().item<double>();
  std::printf("  padded batch of 6: loss %.6f, token-weighted mean of expected per-sample losses %.6f, |diff| %.3g\n",
              batch, num / den, std::abs(batch - num / den));
  EXPECT_NEAR(batch, num / den, 1e-4);
  EXPECT_EQ(o.num_target_tokens, static_cast<int64_t>(den));

  // The fixture's first two training steps run on the initial weights (step 1 has lr 0).
  json tr = json::parse(llava::testing::read_file(tiny_dir() + "/expected/train_finetune.json"));
  for (int step = 0; step < 2; ++step) {
    auto idx = tr["steps"][step]["batch_sample_indices"].get<std::vector<int>>();
    double expected = tr["steps"][step]["loss"].get<double>();
    double got = run(m, make_batch(idx)).loss().item<double>();
    std::printf("  training step %d batch: loss %.6f expected %.6f |diff| %.3g\n", step + 1, got, expected,
                std::abs(got - expected));
    EXPECT_NEAR(got, expected, 1e-4);
  }

  // The chunked loss (output layer only at supervised positions) against cross entropy over the full logits.
  torch::Tensor targets = o.shift_labels.reshape({-1});
  torch::Tensor ce = torch::nn::functional::cross_entropy(
      o.logits.narrow(1, 0, o.logits.size(1) - 1).reshape({targets.size(0), -1}), targets,
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum).ignore_index(kIgnoreIndex));
  const double d_sum = std::abs(o.loss_sum.item<double>() - ce.item<double>());
  std::printf("  chunked loss_sum %.6f vs CE over the full logits %.6f: |diff| %.3g\n", o.loss_sum.item<double>(),
              ce.item<double>(), d_sum);
  EXPECT_LT(d_sum, 1e-3);
  EXPECT_FALSE(run(m, make_batch(all), /*return_logits=*/false).logits.defined());
}

TEST(ModelFixture, MarkerAndImageCountErrors) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  torch::NoGradGuard ng;
  Batch b = make_batch({0, 1});  // 1 + 2 images
  Batch fewer = b;
  fewer.pixel_values = b.pixel_values.narrow(0, 0, 2);
  EXPECT_THROW(run(m, fewer), Error);
  Batch counts = b;
  counts.image_counts = {2, 1};
  EXPECT_THROW(run(m, counts), Error);
  Batch extra = b;
  extra.pixel_values = torch::cat({b.pixel_values, b.pixel_values.narrow(0, 0, 1)}, 0);
  EXPECT_THROW(run(m, extra), Error);
  Batch bad_id = make_batch({3});
  bad_id.input_ids[0][5] = 32000;
  EXPECT_THROW(run(m, bad_id), Error);
  // a text-only batch without pixel_values
  LlavaOutput o = run(m, make_batch({3}));
  EXPECT_NEAR(o.loss().item<double>(), samples()[3].loss, 1e-4);
}

TEST(ModelFixture, GradNormsOfTrainingStepOne) {
  LLAVA_REQUIRE_FIXTURES();
  // finetune: LLM + projector trainable, vision frozen; pretrain: projector only.
  json ft = json::parse(llava::testing::read_file(tiny_dir() + "/expected/train_finetune.json"));
  json pt = json::parse(llava::testing::read_file(tiny_dir() + "/expected/train_pretrain.json"));
  LoadedLlava l = load_llava(tiny_dir());
  auto& m = *l.model;
  for (bool pretrain : {false, true}) {
    for (auto& p : m.parameters()) p.requires_grad_(false);
    for (auto& p : m.multi_modal_projector->parameters()) p.requires_grad_(true);
    if (!pretrain)
      for (auto& p : m.language_model->parameters()) p.requires_grad_(true);
    const json& steps = (pretrain ? pt : ft)["steps"];
    for (int step = 0; step < 2; ++step) {
      m.zero_grad();
      auto idx = steps[step]["batch_sample_indices"].get<std::vector<int>>();
      run(m, make_batch(idx)).loss().backward();
      double sq = 0;
      for (auto& p : m.parameters())
        if (p.requires_grad() && p.grad().defined()) sq += p.grad().to(torch::kDouble).pow(2).sum().item<double>();
      double norm = std::sqrt(sq), expected = steps[step]["grad_norm"].get<double>();
      std::printf("  %s step %d: grad_norm %.6f expected %.6f rel diff %.3g\n", pretrain ? "pretrain" : "finetune",
                  step + 1, norm, expected, std::abs(norm / expected - 1));
      EXPECT_NEAR(norm / expected, 1.0, 1e-4);
    }
  }
}

TEST(ModelFixture, Bf16ForwardWithin2Percent) {
  LLAVA_REQUIRE_FIXTURES();
  LoadOptions o;
  o.dtype = torch::kBFloat16;
  LoadedLlava l = load_llava(tiny_dir(), o);
  EXPECT_EQ(l.model->language_model->model->embed_tokens->weight.scalar_type(), torch::kBFloat16);
  auto losses = per_sample_losses(*l.model);
  double worst = 0;
  for (size_t i = 0; i < losses.size(); ++i) {
    double rel = std::abs(losses[i] / samples()[i].loss - 1);
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 0.02) << samples()[i].id << ": bf16 loss " << losses[i];
  }
  std::printf("  bf16 per-sample loss: worst relative diff vs fp32 reference %.3g\n", worst);
}

TEST(ModelFixture, GradientCheckpointingGivesSameGradients) {
  LLAVA_REQUIRE_FIXTURES();
  LoadedLlava l = load_llava(tiny_dir());
  auto& m = *l.model;
  Batch b = make_batch({0, 3, 1});
  for (bool llm_trainable : {true, false}) {
    for (auto& p : m.parameters()) p.requires_grad_(false);
    for (auto& p : m.multi_modal_projector->parameters()) p.requires_grad_(true);
    if (llm_trainable)
      for (auto& p : m.language_model->parameters()) p.requires_grad_(true);
    std::map<std::string, torch::Tensor> grads[2];
    double losses[2];
    for (int ckpt = 0; ckpt < 2; ++ckpt) {
      m.set_gradient_checkpointing(ckpt == 1);
      for (auto& p : m.parameters()) p.mutable_grad().reset();
      auto o = run(m, b);
      o.loss().backward();
      losses[ckpt] = o.loss().item<double>();
      for (auto& item : m.named_parameters())
        if (item.value().grad().defined()) grads[ckpt][item.key()] = item.value().grad().clone();
    }
    EXPECT_EQ(grads[0].size(), llm_trainable ? 25u : 4u);  // 21 LLM tensors + 4 projector tensors
    EXPECT_GT(grads[1]["multi_modal_projector.linear_1.weight"].abs().sum().item<double>(), 0.0);
    if (llm_trainable) {
      EXPECT_GT(grads[1]["language_model.model.layers.0.self_attn.q_proj.weight"].abs().sum().item<double>(), 0.0);
    }
    m.set_gradient_checkpointing(false);
    ASSERT_EQ(grads[0].size(), grads[1].size());
    ASSERT_FALSE(grads[0].empty());
    double worst = 0;
    for (auto& [name, g] : grads[0]) {
      ASSERT_TRUE(grads[1].count(name)) << name;
      worst = std::max(worst, max_abs_diff(g, grads[1][name]));
    }
    std::printf("  %s: %zu grads, max|diff| with vs without checkpointing %.3g, loss diff %.3g\n",
                llm_trainable ? "LLM+projector trainable" : "projector only", grads[0].size(), worst,
                std::abs(losses[0] - losses[1]));
    EXPECT_LT(worst, 1e-5);
    EXPECT_EQ(losses[0], losses[1]);
  }
}

TEST(ModelFixture, FusedAttentionMatchesWrittenOut) {
#if LLAVA_TORCH_AT_LEAST(2, 0)
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  torch::NoGradGuard ng;
  Batch b = make_batch({0, 1, 2, 3, 4, 5});
  m.set_fused_attention(true);
  auto fused = run(m, b);
  m.set_fused_attention(false);
  auto written = run(m, b);
  m.set_fused_attention(true);
  double d = max_abs_diff(fused.logits, written.logits);
  std::printf("  fused vs written-out attention: logits max|diff| %.3g\n", d);
  EXPECT_LT(d, 1e-4);
  EXPECT_NEAR(fused.loss().item<double>(), written.loss().item<double>(), 1e-5);
#else
  GTEST_SKIP() << "LibTorch " << compat::torch_version_string()
               << " has no fused scaled_dot_product_attention (needs >= 2.0): only the written-out path exists here";
#endif
}

// ---------------------------------------------------------------- checkpoints

TEST(ModelCheckpoint, HfRoundTripShardedWithTokenizer) {
  LLAVA_REQUIRE_FIXTURES();
  std::string dir = tmp_dir("model_hf_rt") + "/out";
  SaveOptions so;
  so.max_shard_bytes = 6 << 20;  // forces shards + index (embed/lm_head are 8 MB each)
  so.tokenizer_source_dir = tiny_dir();
  save_hf_llava(*fixture_model(), dir, so);
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(dir + ".tmp"));
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "preprocessor_config.json", "config.json"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;
  // the written names are exactly the fixture's
  auto ours = SafetensorsCheckpoint::open_dir(dir).names();
  auto theirs = SafetensorsCheckpoint::open_dir(tiny_dir()).names();
  EXPECT_EQ(ours, theirs);
  json cfg = json::parse(llava::testing::read_file(dir + "/config.json"));
  EXPECT_EQ(cfg["model_type"], "llava");
  EXPECT_EQ(cfg["text_config"]["num_key_value_heads"], 2);
  EXPECT_EQ(cfg["vision_config"]["hidden_act"], "quick_gelu");
  LoadedLlava l = load_llava(dir);
  EXPECT_EQ(l.format, "llava");
  double d = max_loss_diff_vs_expected(*l.model);
  std::printf("  reloaded HF directory: per-sample loss max|diff| vs expected %.3g\n", d);
  EXPECT_LT(d, 1e-4);
  // saving again over an existing directory replaces it
  save_hf_llava(*l.model, dir, so);
  EXPECT_TRUE(fs::exists(dir + "/config.json"));
  EXPECT_FALSE(fs::exists(dir + ".old"));
}

TEST(ModelCheckpoint, OriginalLlavaNamingRoundTrip) {
  LLAVA_REQUIRE_FIXTURES();
  std::string root = tmp_dir("model_orig_rt");
  std::string dir = root + "/orig";
  save_original_llava(*fixture_model(), dir);
  json cfg = json::parse(llava::testing::read_file(dir + "/config.json"));
  EXPECT_EQ(cfg["model_type"], "llava_llama");
  EXPECT_EQ(cfg["mm_projector_type"], "mlp2x_gelu");
  EXPECT_EQ(cfg["mm_vision_select_layer"], -2);
  EXPECT_EQ(cfg["mm_vision_select_feature"], "patch");
  auto ck = SafetensorsCheckpoint::open_dir(dir);
  for (const char* n : {"model.embed_tokens.weight", "lm_head.weight", "model.mm_projector.0.weight",
                        "model.mm_projector.2.bias", "model.layers.1.self_attn.k_proj.weight", "model.norm.weight",
                        "model.vision_tower.vision_tower.vision_model.embeddings.class_embedding"})
    EXPECT_NE(ck.find(n), nullptr) << n;
  LoadedLlava l = load_llava(dir);
  EXPECT_EQ(l.format, "llava_llama");
  double d = max_loss_diff_vs_expected(*l.model);
  std::printf("  reloaded original-LLaVA directory: per-sample loss max|diff| %.3g\n", d);
  EXPECT_LT(d, 1e-4);

  // Without the tower in the weights or config: it comes from the mm_vision_tower directory (as released
  // LLaVA checkpoints do), here the CLIP part of a split save.
  save_split(*fixture_model(), root + "/split");
  std::string notower = root + "/notower";
  fs::create_directories(notower);
  {
    auto f = SafetensorsFile::open(dir + "/model.safetensors");
    std::vector<TensorToWrite> ts;
    for (const auto& info : f->tensors())
      if (info.name.find("vision_tower") == std::string::npos)
        ts.push_back({info.name, info.dtype, info.shape, f->data(info), info.end - info.begin});
    write_safetensors(notower + "/model.safetensors", ts);
    cfg.erase("vision_config");
    cfg["mm_vision_tower"] = root + "/split/clip";
    std::ofstream(notower + "/config.json") << cfg.dump(2);
  }
  LoadedLlava l2 = load_llava(notower);
  bool noted = false;
  for (auto& n : l2.notes) noted = noted || n.find("vision tower loaded from") != std::string::npos;
  EXPECT_TRUE(noted);
  d = max_loss_diff_vs_expected(*l2.model);
  std::printf("  original-LLaVA directory + mm_vision_tower CLIP dir: loss max|diff| %.3g\n", d);
  EXPECT_LT(d, 1e-4);
  // and with the tower directory nowhere: a clear error
  cfg["mm_vision_tower"] = "openai/clip-vit-large-patch14-336";
  std::ofstream(notower + "/config.json") << cfg.dump(2);
  expect_load_error(notower, {"openai/clip-vit-large-patch14-336", "--vision_tower"});
}

TEST(ModelCheckpoint, LlmClipProjectorSplitRoundTrip) {
  LLAVA_REQUIRE_FIXTURES();
  std::string dir = tmp_dir("model_split_rt") + "/split";
  SaveOptions so;
  so.tokenizer_source_dir = tiny_dir();
  save_split(*fixture_model(), dir, so);
  EXPECT_TRUE(fs::exists(dir + "/llm/tokenizer.model"));
  EXPECT_TRUE(fs::exists(dir + "/clip/preprocessor_config.json"));
  EXPECT_EQ(detect_model_dir_kind(dir + "/llm"), "llama");
  EXPECT_EQ(detect_model_dir_kind(dir + "/clip"), "clip");
  auto proj = SafetensorsFile::open(dir + "/mm_projector.safetensors");
  EXPECT_NE(proj->find("model.mm_projector.0.weight"), nullptr);
  EXPECT_NE(proj->find("model.mm_projector.2.bias"), nullptr);

  LoadOptions o;
  o.vision_tower = dir + "/clip";
  o.pretrain_mm_mlp_adapter = dir + "/mm_projector.safetensors";
  o.mm_projector_type = "mlp2x_gelu";
  LoadedLlava l = load_llava(dir + "/llm", o);
  EXPECT_EQ(l.format, "llm+clip");
  double d = max_loss_diff_vs_expected(*l.model);
  std::printf("  LLM + CLIP + projector: per-sample loss max|diff| %.3g\n", d);
  EXPECT_LT(d, 1e-4);

  // without an adapter the projector is fresh (and the notes say so); an LLM dir without a tower is an error
  o.pretrain_mm_mlp_adapter.clear();
  LoadedLlava fresh = load_llava(dir + "/llm", o);
  ASSERT_FALSE(fresh.notes.empty());
  EXPECT_NE(fresh.notes[0].find("freshly initialised"), std::string::npos) << fresh.notes[0];
  std::printf("  note: %s\n", fresh.notes[0].c_str());
  EXPECT_GT(max_loss_diff_vs_expected(*fresh.model), 1e-3);
  // ... and loading the projector file into it restores the numbers
  load_projector(*fresh.model, dir + "/mm_projector.safetensors");
  EXPECT_LT(max_loss_diff_vs_expected(*fresh.model), 1e-4);
  expect_load_error(dir + "/llm", {"--vision_tower"});
  // a projector file with a wrong shape for the asked type
  LoadOptions lin = o;
  lin.mm_projector_type = "linear";
  lin.pretrain_mm_mlp_adapter = dir + "/mm_projector.safetensors";
  EXPECT_THROW(load_llava(dir + "/llm", lin), Error);
}

TEST(ModelCheckpoint, SaveProjectorOriginalKeys) {
  LLAVA_REQUIRE_FIXTURES();
  std::string dir = tmp_dir("model_proj");
  save_projector(*fixture_model(), dir + "/mm_projector.safetensors");
  auto f = SafetensorsFile::open(dir + "/mm_projector.safetensors");
  std::vector<std::string> names;
  for (const auto& t : f->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"model.mm_projector.0.bias", "model.mm_projector.0.weight",
                                             "model.mm_projector.2.bias", "model.mm_projector.2.weight"}));
  auto fix = SafetensorsFile::open(tiny_dir() + "/model.safetensors");
  EXPECT_EQ(max_abs_diff(st_tensor(*f, "model.mm_projector.2.weight"),
                         st_tensor(*fix, "multi_modal_projector.linear_2.weight")),
            0.0);
}

TEST(ModelCheckpoint, TorchBinWeights) {
  LLAVA_REQUIRE_FIXTURES();
  // original-LLaVA names in pytorch_model.bin shards written by torch::pickle_save (+ index)
  std::string dir = tmp_dir("model_bin");
  auto names = checkpoint_names(*fixture_model(), "llava_llama");
  c10::Dict<std::string, torch::Tensor> d1, d2;
  json weight_map;
  auto params = fixture_model()->named_parameters();
  for (auto& [model_name, ckpt_name] : names) {
    bool first = ckpt_name.find("vision_tower") != std::string::npos;
    (first ? d1 : d2).insert(ckpt_name, params[model_name].detach().to(torch::kHalf).clone());
    weight_map[ckpt_name] = first ? "pytorch_model-00001-of-00002.bin" : "pytorch_model-00002-of-00002.bin";
  }
  for (auto& [dict, file] : {std::pair{d1, "pytorch_model-00001-of-00002.bin"},
                             std::pair{d2, "pytorch_model-00002-of-00002.bin"}}) {
    auto bytes = torch::pickle_save(dict);
    std::ofstream(dir + "/" + file, std::ios::binary).write(bytes.data(), bytes.size());
  }
  std::ofstream(dir + "/pytorch_model.bin.index.json") << json{{"weight_map", weight_map}}.dump();
  {
    std::string tmp = tmp_dir("model_bin_cfg");
    save_original_llava(*fixture_model(), tmp + "/x");
    fs::copy_file(tmp + "/x/config.json", dir + "/config.json");
  }
  LoadedLlava l = load_llava(dir);
  // fp16 weights: every parameter equals the fp16-rounded fixture value
  double worst = 0;
  auto loaded = l.model->named_parameters();
  for (auto& item : params) worst = std::max(worst, max_abs_diff(loaded[item.key()], item.value().to(torch::kHalf)));
  std::printf("  .bin (fp16, 2 shards + index): max|param - fp16(fixture)| %.3g, loss max|diff| %.3g\n", worst,
              max_loss_diff_vs_expected(*l.model));
  EXPECT_EQ(worst, 0.0);
  EXPECT_LT(max_loss_diff_vs_expected(*l.model), 0.05);

  // not a torch.save archive: a clear error naming the file
  std::ofstream(dir + "/pytorch_model-00001-of-00002.bin", std::ios::binary) << "not a zip file";
  expect_load_error(dir, {"pytorch_model-00001-of-00002.bin"});
}

TEST(ModelCheckpoint, PythonTorchSaveBinLoads) {
  LLAVA_REQUIRE_FIXTURES();
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch: torch.save interop not checked";
  std::string dir = tmp_dir("model_pybin");
  fs::copy_file(tiny_dir() + "/config.json", dir + "/config.json");
  std::string script = dir + "/w.py";
  std::ofstream(script) << R"PY(
import json, struct, sys, torch
src, out = sys.argv[1], sys.argv[2]
b = open(src, 'rb').read()
n = struct.unpack('<Q', b[:8])[0]
h = json.loads(b[8:8 + n])
d = {}
for k, v in h.items():
    if k == '__metadata__': continue
    s, e = v['data_offsets']
    t = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=torch.float32).reshape(v['shape'])
    d[k] = t.to(torch.bfloat16) if 'language_model.model.layers' in k else t.clone()
torch.save(d, out)
)PY";
  std::string cmd = "/usr/bin/python3 " + script + " " + tiny_dir() + "/model.safetensors " + dir +
                    "/pytorch_model.bin";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  LoadedLlava l = load_llava(dir);
  auto loaded = l.model->named_parameters();
  double worst = 0;
  for (auto& item : fixture_model()->named_parameters()) {
    torch::Tensor want = item.value();
    if (item.key().find("language_model.model.layers") != std::string::npos) want = want.to(torch::kBFloat16);
    worst = std::max(worst, max_abs_diff(loaded[item.key()], want));
  }
  std::printf("  Python torch.save .bin (bf16 + fp32 tensors): max|param diff| %.3g\n", worst);
  EXPECT_EQ(worst, 0.0);
}

TEST(ModelCheckpoint, PythonReadsOurSafetensors) {
  LLAVA_REQUIRE_FIXTURES();
  if (!python_has_torch()) GTEST_SKIP() << "/usr/bin/python3 has no torch: Python-side read not checked";
  std::string dir = tmp_dir("model_pyread");
  SaveOptions so;
  so.dtype = torch::kBFloat16;
  save_hf_llava(*fixture_model(), dir + "/bf16", so);
  save_hf_llava(*fixture_model(), dir + "/f32");
  std::string script = dir + "/r.py";
  std::ofstream(script) << R"PY(
import json, struct, sys, torch
def read(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n])
    assert (8 + n) % 8 == 0
    dt = {'F32': torch.float32, 'BF16': torch.bfloat16, 'F16': torch.float16}
    out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']
        out[k] = torch.frombuffer(bytearray(b[8 + n + s:8 + n + e]), dtype=dt[v['dtype']]).reshape(v['shape'])
    return out, h.get('__metadata__')
ref, _ = read(sys.argv[1])
f32, meta = read(sys.argv[2])
bf, _ = read(sys.argv[3])
names = ['language_model.model.embed_tokens.weight', 'multi_modal_projector.linear_1.weight',
         'vision_tower.vision_model.embeddings.patch_embedding.weight',
         'language_model.model.layers.1.self_attn.k_proj.weight']
r = {'n': len(f32), 'n_ref': len(ref), 'meta': meta,
     'f32': max(float((f32[k] - ref[k]).abs().max()) for k in names),
     'bf16': max(float((bf[k].float() - ref[k].to(torch.bfloat16).float()).abs().max()) for k in names),
     'bf16_dtype': str(bf[names[0]].dtype)}
print(json.dumps(r))
)PY";
  std::string out = dir + "/r.json";
  std::string cmd = "/usr/bin/python3 " + script + " " + tiny_dir() + "/model.safetensors " + dir +
                    "/f32/model.safetensors " + dir + "/bf16/model.safetensors > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  json r = json::parse(llava::testing::read_file(out));
  std::printf("  Python read of our files: %s\n", r.dump().c_str());
  EXPECT_EQ(r["n"], r["n_ref"]);
  EXPECT_EQ(r["f32"].get<double>(), 0.0);
  EXPECT_EQ(r["bf16"].get<double>(), 0.0);
  EXPECT_EQ(r["bf16_dtype"], "torch.bfloat16");
  EXPECT_EQ(r["meta"]["format"], "pt");
  json cfg = json::parse(llava::testing::read_file(dir + "/bf16/config.json"));
  EXPECT_EQ(cfg["torch_dtype"], "bfloat16");
}

TEST(ModelCheckpoint, BadCheckpointsGiveClearErrors) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string fixture_file = tiny_dir() + "/model.safetensors";
  {  // truncated file
    std::string dir = copy_fixture_config("bad_trunc");
    std::string bytes = llava::testing::read_file(fixture_file);
    std::ofstream(dir + "/model.safetensors", std::ios::binary).write(bytes.data(), bytes.size() / 2);
    expect_load_error(dir, {dir + "/model.safetensors", "tensor '"});
  }
  {  // bad header JSON
    std::string dir = copy_fixture_config("bad_header");
    std::string bytes = llava::testing::read_file(fixture_file);
    bytes[8] = '[';
    bytes[9] = '{';
    bytes[10] = '!';
    std::ofstream(dir + "/model.safetensors", std::ios::binary).write(bytes.data(), bytes.size());
    expect_load_error(dir, {dir + "/model.safetensors", "header"});
  }
  {  // I32 where a float weight belongs
    std::string dir = copy_fixture_config("bad_dtype");
    write_modified_fixture(dir + "/model.safetensors", [](const TensorInfo& info, TensorToWrite& t) {
      if (info.name == "language_model.model.layers.0.mlp.up_proj.weight") t.dtype = DType::I32;
      return true;
    });
    expect_load_error(dir, {dir + "/model.safetensors", "language_model.model.layers.0.mlp.up_proj.weight", "Int"});
  }
  {  // missing tensor
    std::string dir = copy_fixture_config("bad_missing");
    write_modified_fixture(dir + "/model.safetensors", [](const TensorInfo& info, TensorToWrite&) {
      return info.name != "language_model.model.layers.1.self_attn.o_proj.weight";
    });
    expect_load_error(dir, {dir, "missing 1 tensor", "language_model.model.layers.1.self_attn.o_proj.weight"});
  }
  {  // shape mismatch
    std::string dir = copy_fixture_config("bad_shape");
    write_modified_fixture(dir + "/model.safetensors", [](const TensorInfo& info, TensorToWrite& t) {
      if (info.name == "multi_modal_projector.linear_1.weight") t.shape = {32, 64};
      return true;
    });
    expect_load_error(dir, {dir + "/model.safetensors", "multi_modal_projector.linear_1.weight", "[32, 64]",
                            "[64, 32]"});
  }
  {  // unexpected tensor
    std::string dir = copy_fixture_config("bad_unexpected");
    std::vector<float> extra(4, 0.f);
    auto f = SafetensorsFile::open(fixture_file);
    std::vector<TensorToWrite> ts;
    for (const auto& info : f->tensors()) ts.push_back({info.name, info.dtype, info.shape, f->data(info), info.end - info.begin});
    ts.push_back({"language_model.model.layers.7.extra.weight", DType::F32, {4}, extra.data(), 16});
    write_safetensors(dir + "/model.safetensors", ts);
    expect_load_error(dir, {"unexpected", "language_model.model.layers.7.extra.weight"});
  }
  {  // no weights at all
    std::string dir = copy_fixture_config("bad_noweights");
    expect_load_error(dir, {dir, "no weights"});
  }
}

// ---------------------------------------------------------------- configs, init, small models

namespace {

LlavaConfig small_config() {
  LlavaConfig c;
  c.vision.hidden_size = 16;
  c.vision.intermediate_size = 32;
  c.vision.num_hidden_layers = 2;
  c.vision.num_attention_heads = 2;
  c.vision.image_size = 28;
  c.vision.patch_size = 14;
  c.text.vocab_size = 50;
  c.text.hidden_size = 32;
  c.text.intermediate_size = 48;
  c.text.num_hidden_layers = 2;
  c.text.num_attention_heads = 4;
  c.text.num_key_value_heads = 1;
  c.text.max_position_embeddings = 64;
  c.text.pad_token_id = 0;
  return c;
}

Batch random_batch(const LlavaConfig& c, int64_t seed) {
  torch::manual_seed(seed);
  Batch b;
  b.input_ids = torch::randint(1, c.text.vocab_size, {2, 12}, torch::kLong);
  b.input_ids[0][2] = kImageTokenIndex;
  b.input_ids[1][1] = kImageTokenIndex;
  b.input_ids[1][5] = kImageTokenIndex;
  b.labels = b.input_ids.clone();
  b.labels.masked_fill_(b.input_ids.lt(0), -100);
  b.labels.narrow(1, 0, 4).fill_(-100);
  b.attention_mask = torch::ones({2, 12}, torch::kLong);
  b.attention_mask[0].narrow(0, 9, 3).fill_(0);
  b.pixel_values = torch::randn({3, 3, c.vision.image_size, c.vision.image_size});
  b.image_counts = {1, 2};
  return b;
}

}  // namespace

TEST(ModelConfig, ParsesFixtureAndPartialConfigs) {
  LLAVA_REQUIRE_FIXTURES();
  LlavaConfig c = LlavaConfig::from_json_file(tiny_dir() + "/config.json");
  EXPECT_EQ(c.text.num_key_value_heads, 2);
  EXPECT_EQ(c.text.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.vision.hidden_act, "quick_gelu");
  EXPECT_EQ(c.projector_type, "mlp2x_gelu");
  EXPECT_EQ(c.num_image_tokens(), 16);
  EXPECT_EQ(c.vision_layers_needed(), 2);
  EXPECT_EQ(c.text.pad_token_id, 0);

  std::string dir = tmp_dir("model_cfg");
  // llava-1.5-7b-hf style: partial sub-configs take transformers' defaults
  std::ofstream(dir + "/config.json") << R"({"model_type": "llava", "text_config": {"model_type": "llama",
      "max_position_embeddings": 4096, "rms_norm_eps": 1e-05, "vocab_size": 32064}, "vision_config": {
      "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
      "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768},
      "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "projector_hidden_act": "gelu"})";
  LlavaConfig h = LlavaConfig::from_json_file(dir + "/config.json");
  EXPECT_EQ(h.text.hidden_size, 4096);
  EXPECT_EQ(h.text.num_key_value_heads, 32);
  EXPECT_EQ(h.text.vocab_size, 32064);
  EXPECT_EQ(h.num_image_tokens(), 576);
  EXPECT_EQ(h.vision_layers_needed(), 23);
  // original LLaVA (llava-v1.5-7b keys; the release says model_type "llava"), tower config from a directory
  fs::create_directories(dir + "/clip");
  std::ofstream(dir + "/clip/config.json") << R"({"model_type": "clip", "text_config": {}, "vision_config": {
      "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "num_attention_heads": 16,
      "num_hidden_layers": 24, "patch_size": 14}})";
  std::ofstream(dir + "/orig.json") << R"({"model_type": "llava", "architectures": ["LlavaLlamaForCausalLM"],
      "hidden_size": 4096, "num_hidden_layers": 32, "mm_vision_tower": "clip", "mm_hidden_size": 1024,
      "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
      "rms_norm_eps": 1e-05, "tokenizer_model_max_length": 2048})";
  LlavaConfig o = LlavaConfig::from_json_file(dir + "/orig.json");
  EXPECT_EQ(o.vision.image_size, 336);
  EXPECT_EQ(o.projector_num_linears(), 2);
  EXPECT_EQ(o.tokenizer_model_max_length, 2048);
  EXPECT_FALSE(o.keeps_cls());
  // errors name the file
  std::ofstream(dir + "/bad.json") << R"({"model_type": "llava", "mm_projector_type": "mlp2x_relu", "mm_vision_tower": "clip"})";
  try {
    LlavaConfig::from_json_file(dir + "/bad.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mlp2x_relu"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.json"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_projector_type("linear", "x"), 1);
  EXPECT_EQ(parse_projector_type("mlp3x_gelu", "x"), 3);
  EXPECT_EQ(parse_projector_type("identity", "x"), 0);
  EXPECT_THROW(parse_projector_type("mlpx_gelu", "x"), Error);
}

TEST(ModelInit, RandomInitIsDeterministicAndLoadsBack) {
  LlavaConfig c = small_config();
  c.projector_type = "mlp3x_gelu";
  c.vision_feature_select_strategy = "full";
  c.vision_feature_layer = -1;
  auto a = init_random_model(c, 7), b = init_random_model(c, 7), other = init_random_model(c, 8);
  auto pa = a->named_parameters(), pb = b->named_parameters(), po = other->named_parameters();
  for (auto& item : pa) EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  EXPECT_FALSE(torch::equal(pa["language_model.model.layers.0.mlp.up_proj.weight"],
                            po["language_model.model.layers.0.mlp.up_proj.weight"]));
  EXPECT_TRUE(torch::equal(pa["language_model.model.norm.weight"], torch::ones({32})));
  EXPECT_TRUE(torch::equal(pa["vision_tower.vision_model.pre_layrnorm.bias"], torch::zeros({16})));
  EXPECT_EQ(pa["language_model.model.embed_tokens.weight"][0].abs().sum().item<double>(), 0.0);
  double sd = pa["language_model.model.layers.0.mlp.gate_proj.weight"].std().item<double>();
  EXPECT_NEAR(sd, 0.02, 0.004);
  EXPECT_NE(pa.find("multi_modal_projector.linear_3.weight"), nullptr);

  std::string dir = tmp_dir("model_init") + "/m";
  write_random_model_dir(c, dir, 7);
  LoadedLlava l = load_llava(dir);
  EXPECT_EQ(l.config.projector_type, "mlp3x_gelu");
  EXPECT_TRUE(l.config.keeps_cls());
  Batch batch = random_batch(c, 1);
  torch::NoGradGuard ng;
  auto o1 = run(*a, batch), o2 = run(*l.model, batch);
  EXPECT_EQ(o1.lengths, (std::vector<int64_t>{9 - 1 + 5, 12 - 2 + 10}));  // 5 rows per image (4 patches + CLS)
  EXPECT_EQ(max_abs_diff(o1.logits, o2.logits), 0.0);
  EXPECT_TRUE(std::isfinite(o1.loss().item<double>()));

  // original naming of a 3-layer MLP projector: mm_projector.0/.2/.4; round trip
  save_original_llava(*a, dir + "_orig");
  auto ck = SafetensorsCheckpoint::open_dir(dir + "_orig");
  EXPECT_NE(ck.find("model.mm_projector.4.weight"), nullptr);
  LoadedLlava l2 = load_llava(dir + "_orig");
  EXPECT_EQ(max_abs_diff(run(*l2.model, batch).logits, o1.logits), 0.0);
}

TEST(ModelSmall, TiedEmbeddingsLinearProjectorAndRopeScaling) {
  LlavaConfig c = small_config();
  c.text.tie_word_embeddings = true;
  c.projector_type = "linear";
  auto m = init_random_model(c, 3);
  for (auto& item : m->named_parameters()) EXPECT_EQ(item.key().find("lm_head"), std::string::npos);
  std::string dir = tmp_dir("model_tied");
  save_hf_llava(*m, dir + "/hf");
  save_original_llava(*m, dir + "/orig");
  save_split(*m, dir + "/split");
  EXPECT_NE(SafetensorsFile::open(dir + "/split/mm_projector.safetensors")->find("model.mm_projector.weight"), nullptr);
  Batch batch = random_batch(c, 2);
  torch::NoGradGuard ng;
  auto ref = run(*m, batch);
  LoadOptions so;
  so.vision_tower = dir + "/split/clip";
  so.pretrain_mm_mlp_adapter = dir + "/split/mm_projector.safetensors";
  so.mm_projector_type = "linear";
  std::vector<LoadedLlava> loaded;
  loaded.push_back(load_llava(dir + "/hf"));
  loaded.push_back(load_llava(dir + "/orig"));
  loaded.push_back(load_llava(dir + "/split/llm", so));
  for (auto& l : loaded) EXPECT_EQ(max_abs_diff(run(*l.model, batch).logits, ref.logits), 0.0) << l.format;

  // RoPE scaling: linear factor 2 at position 2p equals none at position p; dynamic below max_pos equals none
  LlamaConfig t = c.text;
  auto [cos0, sin0] = rotary_cos_sin(t, 8, torch::kCPU, torch::kFloat);
  t.rope_scaling.type = "linear";
  t.rope_scaling.factor = 2.0;
  auto [cos1, sin1] = rotary_cos_sin(t, 8, torch::kCPU, torch::kFloat);
  EXPECT_LT(max_abs_diff(cos1[6], cos0[3]), 1e-6);
  EXPECT_LT(max_abs_diff(sin1[4], sin0[2]), 1e-6);
  t.rope_scaling.type = "dynamic";
  auto [cos2, sin2] = rotary_cos_sin(t, 8, torch::kCPU, torch::kFloat);
  EXPECT_EQ(max_abs_diff(cos2, cos0), 0.0);
  auto [cos3, sin3] = rotary_cos_sin(t, 128, torch::kCPU, torch::kFloat);  // beyond 64: larger base
  EXPECT_GT(max_abs_diff(cos3.narrow(0, 0, 8), cos0), 1e-4);
}

TEST(ModelSmall, VisionTowerTrainableKeepsGraphAndFrozenDoesNot) {
  LlavaConfig c = small_config();
  auto m = init_random_model(c, 5);
  Batch b = random_batch(c, 3);
  torch::Tensor px = b.pixel_values;
  EXPECT_TRUE(m->vision_features(px).requires_grad());
  for (auto& p : m->vision_tower->parameters()) p.requires_grad_(false);
  EXPECT_FALSE(m->vision_features(px).requires_grad());
  EXPECT_TRUE(m->image_features(px).requires_grad());  // projector still trainable
  auto o = run(*m, b);
  o.loss().backward();
  EXPECT_TRUE(m->multi_modal_projector->linears[0]->weight.grad().defined());
  // merge: labels at image rows are -100, padding after the real length
  MergedInputs mi = m->merge_inputs(b);
  EXPECT_EQ(mi.lengths, (std::vector<int64_t>{9 - 1 + 4, 12 - 2 + 8}));
  EXPECT_TRUE(torch::equal(mi.labels[0].narrow(0, 2, 4), torch::full({4}, -100L)));
  EXPECT_TRUE(torch::equal(mi.labels[0].narrow(0, 12, 6), torch::full({6}, -100L)));  // padding after row 0's 12
  EXPECT_EQ(mi.inputs_embeds[0].narrow(0, 12, 6).abs().sum().item<double>(), 0.0);
}

namespace {
// Names of the autograd nodes reachable from t's grad_fn.
std::set<std::string> graph_node_names(const torch::Tensor& t) {
  std::set<std::string> names;
  std::vector<std::shared_ptr<torch::autograd::Node>> todo = {t.grad_fn()};
  std::set<torch::autograd::Node*> seen;
  while (!todo.empty()) {
    auto n = todo.back();
    todo.pop_back();
    if (!n || !seen.insert(n.get()).second) continue;
    names.insert(n->name());
    for (const auto& e : n->next_edges()) todo.push_back(e.function);
  }
  return names;
}
bool any_contains(const std::set<std::string>& names, const std::string& needle) {
  for (const auto& n : names)
    if (n.find(needle) != std::string::npos) return true;
  return false;
}
}  // namespace

TEST(ModelSmall, GradientCheckpointingUsesRecomputeNodeOnlyWhileTraining) {
  LlavaConfig c = small_config();
  auto m = init_random_model(c, 11);
  for (auto& p : m->vision_tower->parameters()) p.requires_grad_(false);
  Batch b = random_batch(c, 4);
  m->set_gradient_checkpointing(true);
  auto o = run(*m, b);
  auto names = graph_node_names(o.loss_sum);
  EXPECT_TRUE(any_contains(names, "CheckpointedLayer"));
  // frozen LLM, frozen projector: nothing requires grad, plain forward
  for (auto& p : m->parameters()) p.requires_grad_(false);
  EXPECT_FALSE(run(*m, b).loss_sum.requires_grad());
  // LLM frozen but projector trainable: the hidden state requires grad, so layers are still checkpointed
  for (auto& p : m->multi_modal_projector->parameters()) p.requires_grad_(true);
  EXPECT_TRUE(any_contains(graph_node_names(run(*m, b).loss_sum), "CheckpointedLayer"));
  // under no-grad nothing is recorded
  torch::NoGradGuard ng;
  EXPECT_FALSE(run(*m, b).loss_sum.requires_grad());
  m->set_gradient_checkpointing(false);
}

// ---------------------------------------------------------------- loading without random init

namespace {

// Every parameter of m against the file's tensor of the same HF name, converted to the parameter's dtype.
void expect_params_equal_file(LlavaForCausalLMImpl& m, const std::string& file_path) {
  auto f = SafetensorsFile::open(file_path);
  std::set<std::string> seen;
  for (const auto& [model_name, ckpt_name] : checkpoint_names(m, "llava")) {
    const torch::Tensor p = m.named_parameters()[model_name];
    ASSERT_NE(f->find(ckpt_name), nullptr) << ckpt_name;
    EXPECT_TRUE(torch::equal(p, st_tensor(*f, ckpt_name).to(p.scalar_type()))) << model_name;
    seen.insert(ckpt_name);
  }
  EXPECT_EQ(seen.size(), f->tensors().size());  // every tensor of the file is a parameter and vice versa
}

}  // namespace

TEST(ModelLoad, ParametersAreTheFileTensorsBitForBitAndNoRandomNumberIsDrawn) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string file = tiny_dir() + "/model.safetensors";
  ASSERT_EQ(SafetensorsFile::open(file)->tensors().front().dtype, DType::F32);
  for (bool map_weights : {false, true}) {
    SCOPED_TRACE(map_weights ? "mapped" : "copied");
    torch::manual_seed(123);
    const torch::Tensor expected_next = torch::rand({4});
    torch::manual_seed(123);
    LoadOptions lo;
    lo.map_weights = map_weights;
    LoadedLlava l = load_llava(tiny_dir(), lo);
    // construction skipped the random init: the generator is where the seed left it
    EXPECT_TRUE(torch::equal(torch::rand({4}), expected_next));
    expect_params_equal_file(*l.model, file);
    for (const auto& p : l.model->parameters()) EXPECT_TRUE(p.requires_grad());
  }
  // a bf16 load converts (through the parallel copies) to exactly the rounded file values
  LoadOptions lo;
  lo.dtype = torch::kBFloat16;
  LoadedLlava l = load_llava(tiny_dir(), lo);
  for (const auto& p : l.model->parameters()) EXPECT_EQ(p.scalar_type(), torch::kBFloat16);
  expect_params_equal_file(*l.model, file);
}

TEST(ModelLoad, MappedWeightsAreCopyOnWriteAndTrainLikeCopiedOnes) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string dir = copy_fixture_config("mapped");
  fs::copy_file(tiny_dir() + "/model.safetensors", dir + "/model.safetensors");
  const std::string before = llava::testing::read_file(dir + "/model.safetensors");
  LoadOptions mapped;
  mapped.map_weights = true;
  LoadedLlava a = load_llava(dir, mapped), b = load_llava(dir);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : a.model->parameters()) p.add_(1.0f);
    for (auto& p : b.model->parameters()) p.add_(1.0f);
  }
  // the writes stayed in this process: the file, and a model loaded from it now, are unchanged
  EXPECT_EQ(llava::testing::read_file(dir + "/model.safetensors"), before);
  expect_params_equal_file(*load_llava(dir, mapped).model, dir + "/model.safetensors");
  auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  for (const auto& item : pa) EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
  // replacing the file (by rename, as our writers do) leaves a mapped model's unwritten pages as they were
  LoadedLlava c = load_llava(dir, mapped);
  const std::string norm = "language_model.model.norm.weight";
  const torch::Tensor old_norm = c.model->named_parameters()[norm].clone();
  const std::vector<float> zeros(old_norm.numel(), 0.f);
  write_modified_fixture(dir + "/model.safetensors", [&](const TensorInfo& info, TensorToWrite& t) {
    if (info.name == "model.norm.weight" || info.name == norm) t.data = zeros.data();
    return true;
  });
  EXPECT_TRUE(torch::equal(c.model->named_parameters()[norm], old_norm));
  EXPECT_EQ(load_llava(dir).model->named_parameters()[norm].abs().sum().item<double>(), 0.0);
}

TEST(ModelLoad, SkipParameterInitBuildsTheSameModuleUninitialised) {
  LlavaConfig c = small_config();
  c.projector_type = "mlp2x_gelu";
  torch::manual_seed(5);
  LlavaForCausalLM normal(c);
  const torch::Tensor rng_after_normal = torch::rand({4});
  torch::manual_seed(5);
  const torch::Tensor rng_untouched = torch::rand({4});
  torch::manual_seed(5);
  LlavaForCausalLM skipped{nullptr};
  {
    SkipParameterInit skip;
    EXPECT_TRUE(parameter_init_skipped());
    skipped = LlavaForCausalLM(c);
  }
  EXPECT_FALSE(parameter_init_skipped());
  EXPECT_TRUE(torch::equal(torch::rand({4}), rng_untouched));
  EXPECT_FALSE(torch::equal(rng_after_normal, rng_untouched));  // the normal build does draw
  auto pn = normal->named_parameters(), ps = skipped->named_parameters();
  ASSERT_EQ(pn.size(), ps.size());
  for (const auto& item : pn) {
    ASSERT_NE(ps.find(item.key()), nullptr) << item.key();
    EXPECT_EQ(ps[item.key()].sizes(), item.value().sizes()) << item.key();
    EXPECT_EQ(ps[item.key()].requires_grad(), item.value().requires_grad()) << item.key();
  }
  // the modules describe themselves alike (options corrected after the zero-row build)
  std::ostringstream a, b;
  a << *normal;
  b << *skipped;
  EXPECT_EQ(a.str(), b.str());
  // and a module built without the guard is the stock one: same seed, same weights
  torch::manual_seed(5);
  LlavaForCausalLM again(c);
  for (const auto& item : again->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), pn[item.key()]));
}

// ---------------------------------------------------------------- loss in chunks, attention paths

// linear_cross_entropy in chunks of 1, 3 and all rows against the plain autograd path (the whole [n, V]
// logits, log_softmax, NLL): the same loss, per-position losses, argmax, and gradients w.r.t. hidden and weight.
TEST(ModelLoss, ChunkedCrossEntropyEqualsTheFullLogitsPath) {
  for (torch::Dtype dtype : {torch::kFloat, torch::kBFloat16}) {
    torch::manual_seed(3);
    torch::Tensor h0 = torch::randn({7, 16}).to(dtype), w0 = (torch::randn({50, 16}) * 0.3).to(dtype);
    torch::Tensor targets = torch::randint(0, 50, {7}, torch::kLong);
    torch::Tensor h_ref = h0.clone().requires_grad_(), w_ref = w0.clone().requires_grad_();
    torch::Tensor logp = torch::log_softmax(torch::linear(h_ref, w_ref).to(torch::kFloat), -1);
    torch::Tensor ref_losses = -logp.gather(1, targets.view({7, 1})).view({7});
    (ref_losses.sum() * 0.5).backward();  // a scale, as the mean convention's 1/n
    const double tol = dtype == torch::kFloat ? 1e-5 : 2e-2;
    for (int64_t chunk : {1, 3, 0}) {
      torch::Tensor h = h0.clone().requires_grad_(), w = w0.clone().requires_grad_();
      TokenLosses got = linear_cross_entropy(h, w, targets, chunk);
      (got.loss_sum * 0.5).backward();
      const double dl = max_abs_diff(got.losses, ref_losses), dh = max_abs_diff(h.grad(), h_ref.grad()),
                   dw = max_abs_diff(w.grad(), w_ref.grad());
      std::printf("  %s, chunk %lld: |loss diff| %.2e, |d hidden diff| %.2e, |d weight diff| %.2e\n",
                  dtype == torch::kFloat ? "fp32" : "bf16", static_cast<long long>(chunk), dl, dh, dw);
      EXPECT_LE(dl, tol);
      EXPECT_LE(dh, tol);
      EXPECT_LE(dw, tol);
      EXPECT_NEAR(got.loss_sum.item<double>(), ref_losses.sum().item<double>(), 10 * tol);
      EXPECT_TRUE(torch::equal(got.correct, logp.argmax(-1).eq(targets)));
      EXPECT_EQ(h.grad().scalar_type(), dtype);
      EXPECT_EQ(w.grad().scalar_type(), dtype);
    }
  }
  // a frozen weight gets no gradient and costs none
  torch::Tensor h = torch::randn({4, 8}).requires_grad_(), w = torch::randn({10, 8});
  linear_cross_entropy(h, w, torch::randint(0, 10, {4}, torch::kLong), 2).loss_sum.backward();
  EXPECT_TRUE(h.grad().defined());
  EXPECT_FALSE(w.grad().defined());
  // backward scales the gradients it formed in place and hands them over: a second backward through the
  // same forward (retain_graph) would find none, and says so instead of returning nothing
  torch::Tensor h2 = torch::randn({4, 8}).requires_grad_(), w2 = torch::randn({10, 8}).requires_grad_();
  torch::Tensor loss = linear_cross_entropy(h2, w2, torch::randint(0, 10, {4}, torch::kLong), 2).loss_sum;
  loss.backward({}, /*retain_graph=*/true);
  EXPECT_THROW(loss.backward(), c10::Error);
}

// The written-out attention (query chunks, probabilities recomputed in backward) against the plain autograd
// graph of the same math (the whole [B, H, Tq, Tk] probabilities kept): outputs and the gradients of q, k and v,
// with no mask, a key-padding mask, a per-query mask, causal or not, a KV-cache shape (Tq < Tk), in chunks of
// 1, 3 and all rows (all: one chunk, the probabilities autograd keeps), fp32 and bf16.
TEST(ModelAttention, WrittenOutWithRecomputationEqualsThePlainAutogradPath) {
  for (torch::Dtype dtype : {torch::kFloat, torch::kBFloat16}) {
    const double tol = dtype == torch::kFloat ? 2e-6 : 3e-2;
    const float lowest = dtype == torch::kFloat ? std::numeric_limits<float>::lowest()
                                                : static_cast<float>(std::numeric_limits<c10::BFloat16>::lowest());
    for (int64_t tq : {7, 4}) {
      const int64_t tk = 7, b = 2, h = 3, d = 8;
      torch::manual_seed(11);
      torch::Tensor q0 = torch::randn({b, h, tq, d}).to(dtype), k0 = torch::randn({b, h, tk, d}).to(dtype),
                    v0 = torch::randn({b, h, tk, d}).to(dtype), w = torch::randn({b, h, tq, d}).to(dtype);
      torch::Tensor padding = torch::zeros({b, 1, 1, tk});
      padding[1].narrow(-1, 5, 2).fill_(lowest);  // row 1: the last two keys are padding
      torch::Tensor per_query = torch::zeros({1, 1, tq, tk});
      per_query.narrow(-1, 0, 2).fill_(lowest);  // every query: the first two keys hidden (a sliding window)
      for (const torch::Tensor& mask0 : {torch::Tensor(), padding, per_query}) {
        const torch::Tensor mask = mask0.defined() ? mask0.to(dtype) : mask0;
        for (bool causal : {true, false}) {
          torch::Tensor q = q0.clone().requires_grad_(), k = k0.clone().requires_grad_(), v = v0.clone().requires_grad_();
          torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(d));
          if (mask.defined()) scores = scores + mask;
          if (causal)
            scores = scores.masked_fill(torch::ones({tq, tk}, torch::kBool).triu(tk - tq + 1),
                                        -std::numeric_limits<float>::infinity());
          torch::Tensor ref = torch::matmul(torch::softmax(scores, -1, torch::kFloat).to(dtype), v);
          (ref * w).sum().backward();
          for (int64_t chunk : {1, 3, 0}) {
            torch::Tensor q2 = q0.clone().requires_grad_(), k2 = k0.clone().requires_grad_(),
                          v2 = v0.clone().requires_grad_();
            torch::Tensor out = written_out_attention(q2, k2, v2, mask, causal, chunk);
            (out * w).sum().backward();
            const std::string what = std::string(dtype == torch::kFloat ? "fp32" : "bf16") + " tq " +
                                     std::to_string(tq) + " mask " + std::to_string(mask.defined() ? mask.size(-2) : 0) +
                                     (causal ? " causal" : "") + " chunk " + std::to_string(chunk);
            EXPECT_EQ(out.scalar_type(), dtype) << what;
            EXPECT_LE(max_abs_diff(out, ref), tol) << what;
            EXPECT_LE(max_abs_diff(q2.grad(), q.grad()), 2 * tol) << what;
            EXPECT_LE(max_abs_diff(k2.grad(), k.grad()), 2 * tol) << what;
            EXPECT_LE(max_abs_diff(v2.grad(), v.grad()), 2 * tol) << what;
          }
        }
      }
    }
  }
}

// Right-padded rows need no padding mask: attention with only the causal mask (is_causal, the flash-capable
// path under LibTorch 2.x) and with an explicit key-padding mask give the same loss and gradients.
TEST(ModelSmall, CausalOnlyAttentionEqualsThePaddingMaskedPath) {
  LlavaConfig c = small_config();
  auto m = init_random_model(c, 13);
  torch::manual_seed(2);
  torch::Tensor embeds = torch::randn({2, 10, c.text.hidden_size});
  torch::Tensor key_mask = torch::ones({2, 10}, torch::kBool);
  key_mask[1].narrow(0, 6, 4).fill_(false);  // row 1: 6 real positions, then padding
  auto run_with = [&](const torch::Tensor& mask) {
    m->zero_grad();
    torch::Tensor e = embeds.clone().requires_grad_();
    torch::Tensor h = m->language_model->model->forward(e, mask);
    // the loss over real positions only (as the trainer's: pads carry no target)
    torch::Tensor loss = (h * key_mask.unsqueeze(-1)).square().sum();
    loss.backward();
    std::vector<torch::Tensor> grads = {e.grad()};
    for (auto& p : m->language_model->model->parameters())
      if (p.grad().defined()) grads.push_back(p.grad().clone());  // (embed_tokens: unused here)
    return std::make_pair(loss.item<double>(), grads);
  };
  auto [loss_causal, g_causal] = run_with(torch::Tensor());
  auto [loss_masked, g_masked] = run_with(key_mask);
  double worst = 0;
  for (size_t i = 0; i < g_causal.size(); ++i) {
    // the input gradient at pad positions may differ (pads attend to themselves in the causal-only path)
    torch::Tensor a = i == 0 ? g_causal[i] * key_mask.unsqueeze(-1) : g_causal[i];
    torch::Tensor b = i == 0 ? g_masked[i] * key_mask.unsqueeze(-1) : g_masked[i];
    worst = std::max(worst, max_abs_diff(a, b));
  }
  std::printf("  causal-only vs padding-masked (%s): loss %.6f vs %.6f, max |grad diff| %.2e\n",
              compat::has_fused_attention() ? "fused" : "written out", loss_causal, loss_masked, worst);
  EXPECT_NEAR(loss_causal, loss_masked, 1e-5 * std::abs(loss_masked));
  EXPECT_LE(worst, 1e-5);
}
