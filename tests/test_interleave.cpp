// LLaVA-NeXT-Interleave (SigLIP + mlp2x_gelu + Qwen2 with a tied lm_head, llava-hf layout) against
// ../shared/fixtures/llava-interleave-tiny (transformers 4.37.2/4.38.0 + LLaVA-NeXT reference numbers; every
// convention and tolerance is in that folder's README): the data side (qwen_1_5 template, preprocess_qwen's
// labels, --image_placement next, SigLIP's processor) exact; features, losses, hidden states and logits; the
// token-weighted batch loss; the 6-step trajectory through the real Trainer; checkpoints and the tied
// embedding. Also the Qwen2 / SigLIP / Llama-3 configs on tiny random models, and the plan presets.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "llava/dist/plan.h"
#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/model/config.h"
#include "llava/model/llava.h"
#include "llava/model/siglip.h"
#include "llava/pipeline.h"
#include "llava/safetensors.h"
#include "llava/train/batch.h"
#include "llava/train/lora.h"
#include "llava/train/trainer.h"
#include "test_train_support.h"

using namespace llava;
using namespace llava::testing;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string fix_dir() { return fixture("llava-interleave-tiny"); }
std::string expected(const std::string& name) { return fix_dir() + "/expected/" + name; }

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

const json& samples_json() {
  static json j = json::parse(read_file(expected("samples.json")));
  return j;
}
const json& sample_json(int i) { return samples_json()["samples"][i]; }

const std::map<std::string, torch::Tensor>& expected_tensors(const std::string& file) {
  static std::map<std::string, std::map<std::string, torch::Tensor>> cache;
  auto it = cache.find(file);
  if (it == cache.end()) it = cache.emplace(file, read_tensors(expected(file))).first;
  return it->second;
}

// README item 10 + the interleave conventions: template qwen_1_5, LLaVA-NeXT's tag rule.
Options interleave_options(const std::string& output_dir) {
  Options o = fixture_options_for(fix_dir(), output_dir, /*pretrain=*/false);
  o.version = "qwen_1_5";
  o.image_placement = "next";
  o.model_max_length = 4096;
  for (const char* k : {"version", "image_placement"}) o.set_keys.insert(k);
  return o;
}

struct FixtureData {
  std::unique_ptr<DataPipeline> pipeline;
  std::vector<Example> examples;
};

const FixtureData& fixture_data() {
  static FixtureData d = [] {
    FixtureData f;
    f.pipeline = make_data_pipeline(interleave_options(""), true);
    for (size_t i = 0; i < f.pipeline->dataset->size(); ++i)
      f.examples.push_back(build_example(f.pipeline->dataset->sample(i), f.pipeline->example));
    return f;
  }();
  return d;
}

// One sample as the model takes it (the collator's batch of 1).
LlavaInputs inputs_of(const std::vector<int>& idx) {
  std::vector<Example> ex;
  for (int i : idx) ex.push_back(fixture_data().examples[i]);
  return collate(ex, fixture_data().pipeline->tokenizer.pad_id()).inputs;
}

LlavaForCausalLM& fixture_model() {
  static LlavaForCausalLM m = load_eval_model(fix_dir());
  return m;
}

std::vector<double> per_sample_losses(LlavaForCausalLMImpl& m) {
  torch::NoGradGuard ng;
  std::vector<double> out;
  for (int i = 0; i < 6; ++i) out.push_back(m.forward(inputs_of({i})).loss().item<double>());
  return out;
}

}  // namespace

// ------------------------------------------------------------------------------------------ data

TEST(InterleaveData, PromptIdsLabelsAndPixelsAreExact) {
  LLAVA_REQUIRE_FIXTURES();
  const FixtureData& d = fixture_data();
  ASSERT_EQ(d.examples.size(), 6u);
  const auto& px = expected_tensors("pixel_values.safetensors");
  double worst_px = 0;
  for (int i = 0; i < 6; ++i) {
    const json& s = sample_json(i);
    const Example& ex = d.examples[i];
    EXPECT_EQ(ex.prompt, s["prompt"].get<std::string>()) << s["id"];
    EXPECT_EQ(std::vector<int64_t>(ex.input_ids.begin(), ex.input_ids.end()), s["input_ids"].get<std::vector<int64_t>>())
        << s["id"];
    EXPECT_EQ(std::vector<int64_t>(ex.labels.begin(), ex.labels.end()), s["labels"].get<std::vector<int64_t>>())
        << s["id"];
    EXPECT_EQ(ex.num_images, s["n_images"].get<int>());
    EXPECT_EQ(ex.num_target_tokens, s["num_label_tokens"].get<int>());
    EXPECT_EQ(ex.length_with_images, s["merged_seq_len"].get<int>());
    double d_px = 0;
    if (ex.num_images > 0) {
      torch::Tensor want = px.at("sample" + std::to_string(i) + ".pixel_values");
      torch::Tensor got = inputs_of({i}).pixel_values;
      ASSERT_EQ(got.sizes(), want.sizes()) << s["id"];
      d_px = max_abs_diff(got, want);
      EXPECT_LE(d_px, 1e-6) << s["id"];
      worst_px = std::max(worst_px, d_px);
    }
    std::printf("  sample %d (%s): %zu ids, %d labels, %d image(s), pixels max|diff| %.1e\n", i,
                s["id"].get<std::string>().c_str(), ex.input_ids.size(), ex.num_target_tokens, ex.num_images, d_px);
  }
  std::printf("  pixels: worst max|diff| %.1e\n", worst_px);
}

// The tag rule itself: one marker moves to the front (double space kept), several stay interleaved.
TEST(InterleaveData, NextPlacementMovesOnlyALoneMarker) {
  std::vector<Turn> turns = {{true, "Now look at this one. <image> Same shape?"}, {false, "Yes."},
                             {true, "Compare <image> with <image>: which is red?"}, {false, "The first."}};
  ASSERT_EQ(place_image_markers(turns, 3, ImagePlacement::kNext, false), "");
  EXPECT_EQ(turns[0].value, "<image>\nNow look at this one.  Same shape?");
  EXPECT_EQ(turns[2].value, "Compare <image> with <image>: which is red?");
  std::vector<Turn> front = {{true, "<image>What is it?"}, {false, "A cat."}};
  ASSERT_EQ(place_image_markers(front, 1, ImagePlacement::kNext, false), "");
  EXPECT_EQ(front[0].value, "<image>What is it?");  // already in front: untouched (no "\n" added)
}

// ------------------------------------------------------------------------------------------ model

TEST(InterleaveModel, ConfigIsSiglipQwen2Tied) {
  LLAVA_REQUIRE_FIXTURES();
  LlavaConfig c = LlavaConfig::from_json_file(fix_dir() + "/config.json");
  EXPECT_TRUE(c.vision.is_siglip());
  EXPECT_EQ(c.vision.hidden_act, "gelu_pytorch_tanh");
  EXPECT_DOUBLE_EQ(c.vision.layer_norm_eps, 1e-6);
  EXPECT_EQ(c.num_image_tokens(), 16);
  EXPECT_FALSE(c.keeps_cls());
  EXPECT_TRUE(c.text.is_qwen2());
  EXPECT_TRUE(c.text.qkv_bias());
  EXPECT_FALSE(c.text.o_proj_bias());
  EXPECT_TRUE(c.text.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.text.rope_theta, 1e6);
  EXPECT_EQ(c.text.num_key_value_heads, 2);
  EXPECT_EQ(c.text.pad_token_id, -1);
  EXPECT_EQ(c.vision_feature_layer, -1);
  EXPECT_EQ(c.image_token_index, 151646);
  // "default" would drop a real SigLIP patch (transformers does): refused, naming the reason
  LlavaConfig bad = c;
  bad.vision_feature_select_strategy = "default";
  try {
    bad.validate("test");
    ADD_FAILURE() << "SigLIP + default accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("real patch"), std::string::npos) << e.what();
  }
}

TEST(InterleaveModel, FeaturesLossesHiddenStatesAndLogits) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  const auto& feats = expected_tensors("image_features.safetensors");
  const auto& last3 = expected_tensors("logits_last3.safetensors");
  torch::NoGradGuard ng;
  double worst_v = 0, worst_f = 0, worst_loss = 0, worst_h = 0, worst_logit = 0;
  for (int i = 0; i < 6; ++i) {
    const json& s = sample_json(i);
    const std::string p = "sample" + std::to_string(i);
    LlavaInputs in = inputs_of({i});
    if (in.pixel_values.defined()) {
      torch::Tensor v = m.vision_features(in.pixel_values), f = m.image_features(in.pixel_values);
      ASSERT_EQ(v.sizes(), feats.at(p + ".vision_features").sizes());
      const double dv = max_abs_diff(v, feats.at(p + ".vision_features"));
      const double df = max_abs_diff(f, feats.at(p + ".image_features"));
      EXPECT_LE(dv, 1e-4) << p;
      EXPECT_LE(df, 1e-4) << p;
      worst_v = std::max(worst_v, dv);
      worst_f = std::max(worst_f, df);
    }
    LlavaOutput o = m.forward(in, /*return_logits=*/true);
    const int64_t L = o.logits.size(1);
    EXPECT_EQ(L, s["merged_seq_len"].get<int64_t>()) << p;
    EXPECT_EQ(o.num_target_tokens, s["num_supervised_after_shift"].get<int64_t>()) << p;
    const double dl = std::abs(o.loss().item<double>() - s["loss"].get<double>());
    EXPECT_LE(dl, 1e-4) << p;
    worst_loss = std::max(worst_loss, dl);
    // final hidden states of the last 3 positions (after the final RMSNorm): logits = h @ E^T
    MergedInputs merged = m.merge_inputs(in);
    torch::Tensor h = m.language_model->model->forward(merged.inputs_embeds)[0].narrow(0, L - 3, 3);
    const double dh = max_abs_diff(h, last3.at(p + ".final_hidden_last3"));
    EXPECT_LE(dh, 1e-4) << p;
    worst_h = std::max(worst_h, dh);
    torch::Tensor logits3 = o.logits[0].narrow(0, L - 3, 3);
    double dlog = -1;
    if (last3.count(p + ".logits_last3")) {
      dlog = max_abs_diff(logits3, last3.at(p + ".logits_last3"));
      EXPECT_LE(dlog, 1e-4) << p;
      worst_logit = std::max(worst_logit, dlog);
    }
    EXPECT_TRUE(torch::equal(logits3.argmax(-1).to(torch::kLong).contiguous(),
                             torch::tensor(s["logits_last3_argmax"].get<std::vector<int64_t>>())))
        << p;
    // the tied output layer: logits are the final hidden states times embed_tokens^T
    EXPECT_LE(max_abs_diff(logits3, torch::matmul(h, m.language_model->model->embed_tokens->weight.t())), 1e-4);
    std::printf("  %s: loss %.6f (expected %.6f, |diff| %.1e), final hidden max|diff| %.1e, logits %s\n", p.c_str(),
                o.loss().item<double>(), s["loss"].get<double>(), dl, dh,
                dlog < 0 ? "(not stored)" : (std::to_string(dlog)).c_str());
  }
  std::printf("  worst: vision %.1e, image features %.1e, loss %.1e, final hidden %.1e, logits %.1e\n", worst_v,
              worst_f, worst_loss, worst_h, worst_logit);
}

// README, "transformers' batched merge": the reference loss of a batch is the token-weighted mean of its
// samples; right-padded batches with different image counts per row must give it too (HF's merge does not).
TEST(InterleaveModel, BatchLossIsTokenWeightedEvenWithDifferentImageCounts) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  torch::NoGradGuard ng;
  const std::vector<std::pair<std::vector<int>, double>> cases = {
      {{0, 4}, 12.397850}, {{1, 5}, 12.628899}, {{0, 1}, 12.320541}, {{2, 3}, 12.533620}, {{4, 5}, 12.724385}};
  for (const auto& [idx, want] : cases) {
    const double got = m.forward(inputs_of(idx)).loss().item<double>();
    std::printf("  samples [%d, %d]: batched loss %.6f, reference (token-weighted per-sample) %.6f, |diff| %.1e\n",
                idx[0], idx[1], got, want, std::abs(got - want));
    EXPECT_LE(std::abs(got - want), 1e-4);
  }
}

// ------------------------------------------------------------------------------------------ training

TEST(InterleaveTrain, TrajectoryMatchesTheReferenceTrainer) {
  LLAVA_REQUIRE_FIXTURES();
  json want = json::parse(read_file(expected("train_finetune.json")));
  const std::string out = train_tmp("interleave_trajectory");
  TrainResult r = train(interleave_options(out));
  ASSERT_EQ(r.exit_code, 0) << r.message;
  ASSERT_EQ(r.steps.size(), 6u);
  const TrajectoryDiff worst = expect_trajectory(want, r.steps, 1e-3, "interleave");
  auto got = read_tensors(out);
  double max_proj = 0, max_llm = 0;
  for (const auto& [name, value] : expected_tensors("train_finetune_final_projector.safetensors")) {
    ASSERT_TRUE(got.count(name)) << name;
    max_proj = std::max(max_proj, max_abs_diff(got[name], value));
  }
  for (const auto& [name, value] : expected_tensors("train_finetune_final_llm_subset.safetensors")) {
    ASSERT_TRUE(got.count(name)) << name;
    max_llm = std::max(max_llm, max_abs_diff(got[name], value));
  }
  EXPECT_LE(max_proj, 1e-3);
  EXPECT_LE(max_llm, 1e-3);
  // every trainable tensor's final l2 (float64 reductions), the tied embedding included
  double max_l2_rel = 0;
  for (const auto& [name, stats] : want["final_param_stats"].items()) {
    ASSERT_TRUE(got.count(name)) << name;
    const double l2 = got[name].to(torch::kDouble).norm().item<double>();
    const double rel = std::abs(l2 - stats["l2"].get<double>()) / stats["l2"].get<double>();
    EXPECT_LE(rel, 1e-3) << name;
    max_l2_rel = std::max(max_l2_rel, rel);
  }
  std::printf("  max |loss diff| %.2e, max rel grad_norm diff %.2e, max |lr diff| %.2e, final projector %.2e, "
              "final norm + layer-0 attention %.2e, final l2 rel %.2e\n",
              worst.loss, worst.grad_norm, worst.learning_rate, max_proj, max_llm, max_l2_rel);
  // the frozen tower did not move; the tied output layer was saved once, as embed_tokens
  auto initial = read_tensors(fix_dir());
  for (const auto& [name, value] : initial) {
    if (name.rfind("vision_tower.", 0) == 0) {
      EXPECT_TRUE(torch::equal(got.at(name), value)) << name << " moved";
    }
  }
  EXPECT_FALSE(got.count("language_model.lm_head.weight"));
  std::set<std::string> names_out, names_in;
  for (const auto& kv : got) names_out.insert(kv.first);
  for (const auto& kv : initial) names_in.insert(kv.first);
  EXPECT_EQ(names_out, names_in);
  // and the trained directory loads again with the same tokenizer files
  EXPECT_TRUE(fs::exists(out + "/tokenizer.json"));
  LoadedLlava again = load_llava(out);
  EXPECT_TRUE(again.model->language_model->output_weight().is_same(again.model->language_model->model->embed_tokens->weight));
}

// ------------------------------------------------------------------------------------------ checkpoints

TEST(InterleaveCheckpoint, SaveReloadGivesTheSameLossesAndTheFixtureLayout) {
  LLAVA_REQUIRE_FIXTURES();
  auto& m = *fixture_model();
  const std::string dir = train_tmp("interleave_roundtrip") + "/model";
  SaveOptions so;
  so.tokenizer_source_dir = fix_dir();
  save_hf_llava(m, dir, so);
  // the same tensor names and shapes as the fixture (transformers' layout; no lm_head: tied)
  SafetensorsCheckpoint ours = SafetensorsCheckpoint::open_dir(dir), theirs = SafetensorsCheckpoint::open_dir(fix_dir());
  std::vector<std::string> a = ours.names(), b = theirs.names();
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  EXPECT_EQ(a, b);
  for (const auto& n : b) EXPECT_EQ(ours.find(n)->info->shape, theirs.find(n)->info->shape) << n;
  // config.json: every model key transformers reads, with the fixture's values
  json mine = json::parse(read_file(dir + "/config.json")), ref = json::parse(read_file(fix_dir() + "/config.json"));
  for (const char* k : {"model_type", "image_token_index", "projector_hidden_act", "vision_feature_layer",
                        "vision_feature_select_strategy", "tie_word_embeddings", "pad_token_id"})
    EXPECT_EQ(mine[k], ref[k]) << k;
  for (const char* k : {"model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                        "num_attention_heads", "num_key_value_heads", "hidden_act", "max_position_embeddings",
                        "rms_norm_eps", "rope_theta", "tie_word_embeddings", "use_sliding_window", "sliding_window",
                        "max_window_layers", "bos_token_id", "eos_token_id"})
    EXPECT_EQ(mine["text_config"][k], ref["text_config"][k]) << "text_config." << k;
  for (const char* k : {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                        "num_channels", "image_size", "patch_size", "hidden_act", "layer_norm_eps"})
    EXPECT_EQ(mine["vision_config"][k], ref["vision_config"][k]) << "vision_config." << k;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"})
    EXPECT_TRUE(fs::exists(dir + "/" + f)) << f;

  LoadedLlava back = load_llava(dir);
  back.model->eval();
  std::vector<double> before = per_sample_losses(m), after = per_sample_losses(*back.model);
  for (int i = 0; i < 6; ++i) {
    std::printf("  sample %d: loss %.7f before, %.7f after the round trip\n", i, before[i], after[i]);
    EXPECT_EQ(before[i], after[i]);
  }
}

// ------------------------------------------------------------------------------------------ tied embeddings

// One tensor feeds both uses: its gradient is the sum of an untied copy's input and output gradients, and it
// stays one tensor through an optimizer step, LoRA, merging, saving and reloading.
TEST(InterleaveTied, OneTensorThroughAStepLoraSaveAndReload) {
  LLAVA_REQUIRE_FIXTURES();
  LoadedLlava tied = load_llava(fix_dir());
  auto& lm = *tied.model->language_model;
  auto same = [](LlamaForCausalLMImpl& l) { return l.output_weight().is_same(l.model->embed_tokens->weight); };
  ASSERT_TRUE(same(lm));
  EXPECT_FALSE(lm.lm_head);

  // untied twin: lm_head = a copy of E
  LlavaConfig uc = tied.config;
  uc.text.tie_word_embeddings = false;
  LlavaForCausalLM untied(uc);
  {
    torch::NoGradGuard ng;
    auto src = tied.model->named_parameters();
    for (auto& kv : untied->named_parameters()) {
      if (kv.key() == "language_model.lm_head.weight") kv.value().copy_(lm.model->embed_tokens->weight);
      else kv.value().copy_(src[kv.key()]);
    }
  }
  for (auto& p : tied.model->vision_tower->parameters()) p.requires_grad_(false);
  for (auto& p : untied->vision_tower->parameters()) p.requires_grad_(false);
  LlavaInputs in = inputs_of({0, 1});
  tied.model->forward(in).loss().backward();
  untied->forward(in).loss().backward();
  torch::Tensor sum = untied->language_model->model->embed_tokens->weight.grad() +
                      untied->language_model->lm_head->weight.grad();
  const double dg = max_abs_diff(lm.model->embed_tokens->weight.grad(), sum);
  std::printf("  tied grad vs untied input + output grads: max|diff| %.2e (grad norm %.4f)\n", dg,
              sum.norm().item<double>());
  EXPECT_LE(dg, 1e-6);

  torch::optim::AdamW opt(tied.model->parameters(), torch::optim::AdamWOptions(1e-3).weight_decay(0));
  opt.step();
  EXPECT_TRUE(same(lm));

  torch::manual_seed(0);
  install_lora(*tied.model, LoraOptions{4, 8, 0.0});
  EXPECT_TRUE(same(*tied.model->language_model));
  torch::Tensor after_lora = tied.model->forward(in).loss();
  EXPECT_TRUE(std::isfinite(after_lora.item<double>()));
  merge_lora(*tied.model);
  EXPECT_TRUE(same(*tied.model->language_model));

  const std::string dir = train_tmp("interleave_tied") + "/model";
  save_hf_llava(*tied.model, dir);
  auto saved = read_tensors(dir);
  EXPECT_FALSE(saved.count("language_model.lm_head.weight"));
  EXPECT_TRUE(torch::equal(saved.at("language_model.model.embed_tokens.weight"), lm.model->embed_tokens->weight.detach()));
  LoadedLlava back = load_llava(dir);
  EXPECT_TRUE(same(*back.model->language_model));
  EXPECT_TRUE(torch::equal(back.model->language_model->output_weight(), lm.output_weight().detach()));
}

// ------------------------------------------------------------------------------------------ tiny random models

namespace {

// A SigLIP + Qwen2 (or LLaMA) LLaVA of a few thousand parameters, for tests without the fixture.
LlavaConfig tiny_siglip_config(const std::string& text_type) {
  LlavaConfig c;
  c.vision = ClipVisionConfig::siglip_defaults();
  c.vision.hidden_size = 16;
  c.vision.intermediate_size = 32;
  c.vision.num_hidden_layers = 2;
  c.vision.num_attention_heads = 2;
  c.vision.image_size = 16;
  c.vision.patch_size = 8;
  c.text = text_type == "qwen2" ? LlamaConfig::qwen2_defaults() : LlamaConfig();
  c.text.vocab_size = 64;
  c.text.hidden_size = 16;
  c.text.intermediate_size = 32;
  c.text.num_hidden_layers = 2;
  c.text.num_attention_heads = 4;
  c.text.num_key_value_heads = 2;
  c.text.tie_word_embeddings = text_type == "qwen2";
  c.vision_feature_layer = -1;
  c.vision_feature_select_strategy = "full";
  c.image_token_index = 63;
  c.validate("tiny");
  return c;
}

LlavaInputs tiny_inputs(int64_t image_size) {
  LlavaInputs in;
  in.input_ids = torch::tensor({{1, 2, kImageTokenIndex, 3, 4, 5}, {6, kImageTokenIndex, 7, 8, kImageTokenIndex, 9}},
                               torch::kLong);
  in.labels = torch::tensor({{-100, -100, -100, 3, 4, 5}, {-100, -100, 7, 8, -100, 9}}, torch::kLong);
  torch::manual_seed(5);
  in.pixel_values = torch::randn({3, 3, image_size, image_size});
  in.image_counts = {1, 2};
  return in;
}

}  // namespace

TEST(InterleaveSmall, SiglipTowerHasNoClsAndItsNamesAreHfs) {
  LlavaConfig c = tiny_siglip_config("qwen2");
  LlavaForCausalLM m = init_random_model(c, 3);
  std::set<std::string> names;
  for (const auto& [n, p] : checkpoint_names(*m, "llava")) names.insert(p);
  for (const char* n : {"vision_tower.vision_model.embeddings.patch_embedding.bias",
                        "vision_tower.vision_model.embeddings.position_embedding.weight",
                        "vision_tower.vision_model.post_layernorm.weight", "vision_tower.vision_model.head.probe",
                        "vision_tower.vision_model.head.attention.in_proj_weight",
                        "language_model.model.layers.0.self_attn.q_proj.bias"})
    EXPECT_TRUE(names.count(n)) << n;
  for (const char* n : {"vision_tower.vision_model.embeddings.class_embedding", "vision_tower.vision_model.pre_layrnorm.weight",
                        "language_model.model.layers.0.self_attn.o_proj.bias", "language_model.lm_head.weight"})
    EXPECT_FALSE(names.count(n)) << n;
  torch::NoGradGuard ng;
  torch::Tensor px = torch::randn({2, 3, 16, 16});
  EXPECT_EQ(m->vision_features(px).sizes(), (std::vector<int64_t>{2, 4, 16}));  // 2x2 patches, all kept
  // hidden_states[0] is patches + positions: the patch embedding is a biased conv, checked against conv2d
  auto* tower = dynamic_cast<SiglipVisionModelImpl*>(m->vision_tower.get());
  ASSERT_NE(tower, nullptr);
  auto& emb = tower->vision_model->embeddings;
  torch::Tensor conv = torch::conv2d(px, emb->patch_embedding->weight, emb->patch_embedding->bias, 8);
  torch::Tensor want = conv.flatten(2).transpose(1, 2) + emb->position_embedding->weight;
  EXPECT_LE(max_abs_diff(tower->hidden_state(px, 0), want), 1e-5);
  // vision_use_head false: no head (llava-hf's checkpoints)
  LlavaConfig nohead = c;
  nohead.vision.use_head = false;
  LlavaForCausalLM m2(nohead);
  for (const auto& [n, p] : checkpoint_names(*m2, "llava")) EXPECT_EQ(p.find(".head."), std::string::npos) << p;
  json j = json::parse(nohead.to_hf_json_string());
  EXPECT_EQ(j["vision_config"]["vision_use_head"], false);
  EXPECT_EQ(j["vision_config"]["model_type"], "siglip_vision_model");
  EXPECT_EQ(j["vision_feature_select_strategy"], "full");
  EXPECT_EQ(j["text_config"]["model_type"], "qwen2");
}

TEST(InterleaveSmall, Qwen2RandomModelRoundTripsAndRefusesSlidingWindow) {
  LlavaConfig c = tiny_siglip_config("qwen2");
  const std::string dir = train_tmp("interleave_small") + "/qwen2";
  write_random_model_dir(c, dir, 11);
  LoadedLlava l = load_llava(dir);
  EXPECT_TRUE(l.config.text.is_qwen2());
  EXPECT_TRUE(l.config.vision.is_siglip());
  EXPECT_TRUE(l.config.text.tie_word_embeddings);
  LlavaForCausalLM fresh = init_random_model(c, 11);
  torch::NoGradGuard ng;
  LlavaInputs in = tiny_inputs(16);
  const double a = fresh->forward(in).loss().item<double>(), b = l.model->forward(in).loss().item<double>();
  std::printf("  tiny SigLIP + Qwen2: loss %.6f built, %.6f reloaded\n", a, b);
  EXPECT_EQ(a, b);
  LlamaConfig sw = c.text;
  sw.use_sliding_window = true;
  EXPECT_THROW(sw.validate("test"), Error);
}

// Llama-3 as the LLM: rope_theta 500000 and rope_scaling llama3 (transformers' _compute_llama3_parameters,
// recomputed here in double), the LLaMA block unchanged, a model that saves and reloads.
TEST(InterleaveSmall, Llama3ShapedConfigRopeAndRoundTrip) {
  LlamaConfig t;
  t.vocab_size = 300;
  t.hidden_size = 64;
  t.intermediate_size = 128;
  t.num_hidden_layers = 2;
  t.num_attention_heads = 4;
  t.num_key_value_heads = 2;  // GQA as Llama-3 (32 / 8)
  t.rope_theta = 500000.0;
  t.max_position_embeddings = 131072;
  t.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  t.bos_token_id = 128000 % 300;
  t.eos_token_id = 128001 % 300;
  t.validate("llama3");
  const int64_t d = t.head_dim(), L = 40;
  auto [cos, sin] = rotary_cos_sin(t, L, torch::kCPU, torch::kFloat);
  double worst = 0;
  for (int64_t i = 0; i < d / 2; ++i) {
    double inv = 1.0 / std::pow(500000.0, static_cast<double>(2 * i) / d);
    const double wavelen = 2 * M_PI / inv, low = 8192 / 1.0, high = 8192 / 4.0;
    double scaled = wavelen > low ? inv / 8.0 : inv;
    if (!(wavelen < high) && !(wavelen > low)) {
      const double smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0);
      scaled = (1 - smooth) * scaled / 8.0 + smooth * scaled;
    }
    for (int64_t pos : {1, 7, 39}) {
      worst = std::max(worst, std::abs(cos[pos][i].item<double>() - std::cos(pos * scaled)));
      worst = std::max(worst, std::abs(sin[pos][i + d / 2].item<double>() - std::sin(pos * scaled)));
    }
  }
  std::printf("  llama3 rope: max |cos/sin diff| vs transformers' formula (double) %.2e\n", worst);
  EXPECT_LE(worst, 1e-5);

  LlavaConfig c = tiny_siglip_config("llama");
  c.text = t;
  c.vision = ClipVisionConfig::clip_vit_large_336();  // the CLIP path stays as it was
  c.vision.hidden_size = 16;
  c.vision.intermediate_size = 32;
  c.vision.num_hidden_layers = 2;
  c.vision.num_attention_heads = 2;
  c.vision.image_size = 16;
  c.vision.patch_size = 8;
  c.vision_feature_select_strategy = "default";
  c.vision_feature_layer = -2;
  c.validate("llama3 llava");
  const std::string dir = train_tmp("interleave_small") + "/llama3";
  write_random_model_dir(c, dir, 4);
  LoadedLlava l = load_llava(dir);
  EXPECT_EQ(l.config.text.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(l.config.text.rope_theta, 500000.0);
  EXPECT_FALSE(l.config.text.qkv_bias());
  torch::NoGradGuard ng;
  LlavaInputs in = tiny_inputs(16);
  in.input_ids.masked_fill_(in.input_ids.ge(0), 17);
  const double a = init_random_model(c, 4)->forward(in).loss().item<double>(), b = l.model->forward(in).loss().item<double>();
  EXPECT_EQ(a, b);
  // a tokenizer without a pad token (Llama-3's) pads with 0 (LLaVA-NeXT's collator), masked out
  Example e1, e2;
  e1.input_ids = {5, 6, 7};
  e1.labels = {-100, 6, 7};
  e2.input_ids = {8};
  e2.labels = {8};
  Batch b2 = collate({e1, e2}, -1);
  EXPECT_EQ(b2.inputs.input_ids[1][2].item<int64_t>(), 0);
  EXPECT_FALSE(b2.inputs.attention_mask[1][2].item<bool>());
}

TEST(InterleaveSmall, Llama3TokenizerLoadsFromTokenizerJson) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string dir = fixture("bpe-tokenizer/llama3");
  auto tok = load_tokenizer(dir);
  std::printf("  llama3 tokenizer: vocab %d, bos %d, eos %d, pad %d\n", tok->vocab_size(), tok->bos_id(), tok->eos_id(),
              tok->pad_id());
  EXPECT_GT(tok->vocab_size(), 128000);
  EXPECT_EQ(tok->token_to_id("<|begin_of_text|>"), 128000);
  EXPECT_EQ(tok->decode(tok->encode("Hello world", false)), "Hello world");
}

// ------------------------------------------------------------------------------------------ plan

TEST(InterleavePlan, PresetKnowsSiglipAndQwen2Sizes) {
  dist::PlanModel m;
  ASSERT_TRUE(dist::plan_preset("lmms-lab/llava-next-interleave-qwen-7b", m));
  EXPECT_TRUE(m.siglip);
  EXPECT_TRUE(m.qkv_bias);
  EXPECT_EQ(m.image_tokens(), 729);  // 384 / 14 = 27 per side, no CLS
  // SigLIP-so400m without its last layer and head (LLaVA-NeXT drops both): 26 layers
  EXPECT_EQ(m.v_layers, 26);
  const int64_t vision = m.vision_params(), llm = m.llm_params();
  std::printf("  llava-next-interleave-qwen-7b: LLM %lld, vision %lld, projector %lld parameters\n",
              static_cast<long long>(llm), static_cast<long long>(vision), static_cast<long long>(m.projector_params()));
  // Qwen1.5-7B: 7.7213 B parameters (untied, q/k/v biases); SigLIP-so400m's tower is 428.2 M with 27 layers and
  // the head, 397.75 M with 26 layers and none (worked out by hand from the configs' sizes)
  EXPECT_NEAR(llm / 1e9, 7.7213, 0.0001);
  EXPECT_NEAR(vision / 1e6, 397.75, 0.01);
  // the same sizes from a model directory's config (the fixture: its exact parameter count)
  LLAVA_REQUIRE_FIXTURES();
  LlavaConfig c = LlavaConfig::from_json_file(fix_dir() + "/config.json");
  dist::PlanModel f;
  f.vocab = c.text.vocab_size;
  f.hidden = c.text.hidden_size;
  f.intermediate = c.text.intermediate_size;
  f.layers = c.text.num_hidden_layers;
  f.heads = c.text.num_attention_heads;
  f.kv_heads = c.text.num_key_value_heads;
  f.head_dim = c.text.head_dim();
  f.tie_embeddings = true;
  f.qkv_bias = true;
  f.siglip = true;
  f.siglip_head = true;
  f.v_hidden = 32;
  f.v_intermediate = 64;
  f.v_layers = 3;
  f.v_heads = 4;
  f.image_size = 32;
  f.patch_size = 8;
  int64_t total = 0;
  for (const auto& kv : read_tensors(fix_dir())) total += kv.second.numel();
  EXPECT_EQ(f.llm_params() + f.vision_params() + f.projector_params(), total);
}

// ------------------------------------------------------------------------------------------ the command line

// check-data, eval and plan on the fixture through the built binary (skipped when it is not built).
TEST(InterleaveCli, CheckDataEvalAndPlan) {
  LLAVA_REQUIRE_FIXTURES();
  if (!fs::exists(LLAVA_BINARY)) GTEST_SKIP() << LLAVA_BINARY << " not built";
  const std::string common = " --model_name_or_path " + fix_dir() + " --data_path " + fix_dir() +
                             "/data.json --image_folder " + fix_dir() + "/images --version qwen_1_5 --image_placement next";
  RunResult check = run_binary("check-data" + common);
  std::printf("%s", check.out.c_str());
  EXPECT_EQ(check.code, 0) << check.err;

  const std::string out = train_tmp("interleave_cli") + "/eval.jsonl";
  RunResult eval = run_binary("eval" + common + " --per_device_eval_batch_size 2 --output " + out);
  ASSERT_EQ(eval.code, 0) << eval.err;
  std::vector<std::string> lines = lines_of(read_file(out));
  ASSERT_EQ(lines.size(), 6u);
  double worst = 0;
  for (size_t i = 0; i < 6; ++i) {
    json r = json::parse(lines[i]);
    const double d = std::abs(r["loss"].get<double>() - sample_json(r["index"].get<int>())["loss"].get<double>());
    worst = std::max(worst, d);
    EXPECT_LE(d, 1e-4) << lines[i];
  }
  std::printf("  eval: worst per-sample |loss diff| %.1e\n", worst);

  RunResult plan = run_binary("plan --config " + std::string(LLAVA_SOURCE_DIR) +
                              "/configs/llava-interleave-qwen-7b-finetune.yaml --model_name_or_path "
                              "lmms-lab/llava-next-interleave-qwen-7b --world_size 8");
  std::printf("%s", plan.out.c_str());
  EXPECT_EQ(plan.code, 0) << plan.err;
  EXPECT_NE(plan.out.find("this config: zero_stage 2, gradient_checkpointing true"), std::string::npos);
}
