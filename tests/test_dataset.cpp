// Dataset index, example building (template + tokenizer + masking + images) and the sampler.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "llava/dataset.h"
#include "llava/error.h"
#include "llava/example.h"
#include "llava/safetensors.h"
#include "llava/sampler.h"
#include "llava/text_util.h"
#include "test_data_support.h"

using namespace llava;
using nlohmann::json;

namespace {

ExampleOptions fixture_options(const LlamaTokenizer& tok) {
  ExampleOptions o;
  o.tokenizer = &tok;
  o.conversation = &ConversationTemplate::get("v1");
  o.image_feature_positions = 16;
  o.image_config = ImageProcessorConfig::from_json_file(llava::testing::fixture("llava-tiny/preprocessor_config.json"));
  return o;
}

}  // namespace

// Every sample of the fixture: prompt, input_ids, labels exactly; pixels within 1e-6.
TEST(FixtureData, TokenizationAndPixelsMatchReference) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string dir = llava::testing::fixture("llava-tiny");
  LlamaTokenizer tok = LlamaTokenizer::from_dir(dir);
  ExampleOptions opt = fixture_options(tok);
  Dataset ds = Dataset::open(dir + "/data.json", dir + "/images");
  json expected = json::parse(llava::testing::read_file(dir + "/expected/samples.json"));
  const json& samples = expected.contains("samples") ? expected["samples"] : expected;
  auto pixels = SafetensorsFile::open(dir + "/expected/pixel_values.safetensors");
  ASSERT_EQ(ds.size(), 6u);
  for (size_t i = 0; i < ds.size(); ++i) {
    SCOPED_TRACE("sample " + std::to_string(i));
    const json& e = samples.is_array() ? samples[i] : samples.begin().value()[i];
    Example ex = build_example(ds.sample(i), opt);
    EXPECT_EQ(ex.prompt, e["prompt"].get<std::string>());
    EXPECT_EQ(ex.input_ids, e["input_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(ex.labels, e["labels"].get<std::vector<int32_t>>());
    EXPECT_EQ(ex.length_with_images, e["merged_seq_len"].get<int>());
    EXPECT_EQ(ex.num_target_tokens, e["num_label_tokens"].get<int>());
    EXPECT_TRUE(ex.warning.empty()) << ex.warning;
    const TensorInfo* ref = pixels->find("sample" + std::to_string(i) + ".pixel_values");
    if (ex.num_images == 0) {
      EXPECT_EQ(ref, nullptr);
      continue;
    }
    ASSERT_NE(ref, nullptr);
    std::vector<float> want = pixels->to_float(*ref);
    std::vector<float> got;
    for (const auto& p : ex.pixels) got.insert(got.end(), p.data.begin(), p.data.end());
    ASSERT_EQ(got.size(), want.size());
    double max_diff = 0;
    for (size_t k = 0; k < got.size(); ++k) max_diff = std::max(max_diff, double(std::abs(got[k] - want[k])));
    EXPECT_LE(max_diff, 1e-6);
    std::printf("sample %zu: %zu ids, %d images, pixel max |diff| %.2e\n", i, ex.input_ids.size(), ex.num_images, max_diff);
  }
}

// --- the tiny self-made directory: runs everywhere ---

class TinyData : public ::testing::Test {
 protected:
  void SetUp() override {
    d = &llava::testing::tiny_data_dir();
    tok = std::make_unique<LlamaTokenizer>(LlamaTokenizer::from_dir(d->model_dir));
    opt.tokenizer = tok.get();
    opt.conversation = &ConversationTemplate::get("v1");
    opt.image_feature_positions = 4;
    opt.image_config = ImageProcessorConfig::clip_defaults(28);
    opt.model_max_length = 256;
  }
  Dataset data(const std::string& text) { return Dataset::from_text(text, d->image_dir, "test.json"); }
  // The error building sample i, or "" when it builds.
  std::string error_of(const std::string& text, size_t i = 0) {
    try {
      Dataset ds = data(text);
      build_example(ds.sample(i), opt);
      return "";
    } catch (const Error& e) {
      return e.what();
    }
  }
  const llava::testing::TinyDataDir* d = nullptr;
  std::unique_ptr<LlamaTokenizer> tok;
  ExampleOptions opt;
};

TEST_F(TinyData, ImagesFromPathsListsAndBase64InOrder) {
  std::string text = R"([{"id": 7, "image": ["a.png", "b.png"], "conversations": [
      {"from": "human", "value": "<image> and <image>"}, {"from": "gpt", "value": "red"}]},
    {"id": "b64", "images": [")" + d->png_base64 + R"(", "data:image/png;base64,)" + d->png_base64 + R"("],
     "conversations": [{"from": "user", "value": "two <image><image>"}, {"from": "assistant", "value": "blue"}]},
    {"id": "text", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "circle"}]}])";
  Dataset ds = data(text);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.id(0), "7");  // numeric ids are written as JSON
  Sample s0 = ds.sample(0);
  ASSERT_EQ(s0.images.size(), 2u);
  EXPECT_EQ(s0.images[1].path, d->image_dir + "/b.png");
  Example e0 = build_example(s0, opt);
  EXPECT_EQ(std::count(e0.input_ids.begin(), e0.input_ids.end(), kImageTokenIndex), 2);
  ASSERT_EQ(e0.pixels.size(), 2u);
  EXPECT_EQ(e0.pixels[1].height, 28);  // 40x20 resized and center-cropped
  EXPECT_EQ(e0.length_with_images, static_cast<int>(e0.input_ids.size()) + 2 * 3);
  Example e1 = build_example(ds.sample(1), opt);
  EXPECT_EQ(e1.num_images, 2);
  EXPECT_EQ(ds.sample(1).images[0].kind, ImageRef::Kind::kInline);
  Example e2 = build_example(ds.sample(2), opt);
  EXPECT_EQ(e2.num_images, 0);
  EXPECT_EQ(std::count(e2.input_ids.begin(), e2.input_ids.end(), kImageTokenIndex), 0);
  EXPECT_GT(ds.modality_length(0), 0);
  EXPECT_LT(ds.modality_length(2), 0);
  // the index counts the images each sample names (what --group_by_length_window adds to its length)
  EXPECT_EQ(ds.image_count(0), 2);
  EXPECT_EQ(ds.image_count(1), 2);
  EXPECT_EQ(ds.image_count(2), 0);
  Dataset single = data(R"([{"id": "s", "image": "a.png", "conversations": [{"from": "human", "value": "<image>"},
      {"from": "gpt", "value": "x"}]}])");
  EXPECT_EQ(single.image_count(0), 1);
}

// Labels: only the answers and their </s> are supervised (v1), for every round.
TEST_F(TinyData, VicunaMaskingSupervisesAnswersOnly) {
  Dataset ds = data(R"([{"id": "m", "conversations": [
      {"from": "human", "value": "what shape"}, {"from": "gpt", "value": "red circle"},
      {"from": "human", "value": "what colour"}, {"from": "gpt", "value": "blue square"}]}])");
  Example e = build_example(ds.sample(0), opt);
  ASSERT_TRUE(e.warning.empty()) << e.warning;
  // The supervised tokens spell exactly the two answers, each with its </s>.
  std::string supervised;
  for (size_t k = 0; k < e.labels.size(); ++k)
    if (e.labels[k] != kIgnoreIndex) {
      EXPECT_EQ(e.labels[k], e.input_ids[k]);
      supervised += tok->id_to_piece(e.labels[k]);
    }
  // (the space after "ASSISTANT:" is fused into the first answer piece, as with LLaMA's "▁A")
  EXPECT_EQ(replace_all(supervised, "\xE2\x96\x81", " "), " red circle</s> blue square</s>");
}

TEST_F(TinyData, PlainTemplateSupervisesCaption) {
  opt.conversation = &ConversationTemplate::get("plain");
  Dataset ds = data(R"([{"id": "p", "image": "a.png", "conversations": [
      {"from": "human", "value": "<image>\nDescribe."}, {"from": "gpt", "value": "a red circle"}]}])");
  Example e = build_example(ds.sample(0), opt);
  EXPECT_EQ(e.prompt, "<image>a red circle\n");
  EXPECT_EQ(e.input_ids[0], tok->bos_id());
  EXPECT_EQ(e.input_ids[1], kImageTokenIndex);
  EXPECT_EQ(e.labels[0], kIgnoreIndex);
  EXPECT_EQ(e.labels[1], kIgnoreIndex);
  for (size_t k = 2; k < e.labels.size(); ++k) EXPECT_EQ(e.labels[k], e.input_ids[k]);
}

TEST_F(TinyData, Llama2MaskingSupervisesAnswers) {
  opt.conversation = &ConversationTemplate::get("llava_llama_2");
  Dataset ds = data(R"([{"id": "l", "conversations": [
      {"from": "human", "value": "what shape"}, {"from": "gpt", "value": "red circle"}]}])");
  Example e = build_example(ds.sample(0), opt);
  EXPECT_TRUE(e.warning.empty()) << e.warning;
  EXPECT_GT(e.num_target_tokens, 0);
  EXPECT_EQ(e.labels.back(), tok->eos_id());
}

// preprocess_mpt: rounds regrouped on <|im_end|>, each counted with its own BOS from position 0. With a
// BOS-adding tokenizer and <|im_end|> as text the count is short of the real length, so the reference
// masks the sample and warns (llava-next-tiny README item 5); one round: cur = tokens of the prompt
// without its final <|im_end|>.
TEST_F(TinyData, ChatmlDirectCountsRoundsAsPreprocessMpt) {
  opt.conversation = &ConversationTemplate::get("chatml_direct");
  Dataset ds = data(R"([{"id": "c", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nwhat colour"}, {"from": "gpt", "value": "red"}]}])");
  Example ex = build_example(ds.sample(0), opt);
  const std::string end = "<|im_end|>";
  ASSERT_EQ(ex.prompt.substr(ex.prompt.size() - end.size()), end);
  const size_t cur = tok->encode_with_image_tokens(ex.prompt.substr(0, ex.prompt.size() - end.size())).size();
  EXPECT_EQ(ex.warning.rfind("WARNING: tokenization mismatch: " + std::to_string(cur) + " vs. " +
                                 std::to_string(ex.input_ids.size()) + ". (ignored) sample 0 (id 'c')",
                             0),
            0u)
      << ex.warning;
  EXPECT_EQ(ex.num_target_tokens, 0);
}

// Without anyres nothing changes: one [3, H, W] tile per image, no sizes or layouts.
TEST_F(TinyData, NonAnyresImagesStayOneTile) {
  Dataset ds = data(R"([{"id": "p", "image": ["a.png", "b.png"], "conversations": [{"from": "human", "value": "<image>\n<image>\nwhat"}, {"from": "gpt", "value": "red"}]}])");
  Example ex = build_example(ds.sample(0), opt);
  ASSERT_EQ(ex.pixels.size(), 2u);
  for (const auto& p : ex.pixels) {
    EXPECT_EQ(p.tiles, 1);
    EXPECT_EQ(p.data.size(), size_t{3} * 28 * 28);
  }
  EXPECT_TRUE(ex.image_sizes.empty());
  EXPECT_TRUE(ex.image_layouts.empty());
  EXPECT_EQ(ex.length_with_images, static_cast<int>(ex.input_ids.size()) + 2 * (4 - 1));
}

TEST_F(TinyData, TokenizationMismatchMasksWholeSample) {
  // A literal <unk> is id 0 = the pad id: LLaVA's total_len does not count it, so the round arithmetic
  // disagrees and the sample is kept with every label masked (and a warning naming it).
  Dataset ds = data(R"([{"id": "mm", "conversations": [
      {"from": "human", "value": "what <unk> shape"}, {"from": "gpt", "value": "red"}]}])");
  Example e = build_example(ds.sample(0), opt);
  EXPECT_NE(e.warning.find("tokenization mismatch"), std::string::npos);
  EXPECT_NE(e.warning.find("id 'mm'"), std::string::npos);
  EXPECT_EQ(e.num_target_tokens, 0);
}

TEST_F(TinyData, BadSamplesNameIndexIdAndReason) {
  const std::string good = R"({"id": "ok", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "red"}]})";
  auto expect_bad = [&](const std::string& sample, const std::string& reason) {
    std::string err = error_of("[" + good + ", " + sample + "]", 1);
    EXPECT_NE(err.find("sample 1 (id 'bad')"), std::string::npos) << err;
    EXPECT_NE(err.find(reason), std::string::npos) << "want '" << reason << "' in: " << err;
  };
  const std::string conv = R"("conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "x"}])";
  expect_bad(R"({"id": "bad", "image": "missing.png", )" + conv + "}", "cannot read image file");
  expect_bad(R"({"id": "bad", "images": ["!!!!not-base64!!!!"], )" + conv + "}", "neither base64 image data nor a readable file");
  expect_bad(R"({"id": "bad", "images": ["data:image/png;base64,@@@"], )" + conv + "}", "data: URL is not base64");
  expect_bad(R"({"id": "bad", "image": "not_an_image.png", )" + conv + "}", "not_an_image.png");
  expect_bad(R"({"id": "bad", "image": ["a.png", "b.png"], )" + conv + "}", "1 <image> marker(s) but the sample has 2");
  // LLaVA-NeXT's video samples (--video_folder, --frames_upbound): refused, each one a bad sample
  expect_bad(R"({"id": "bad", "video": "v_clip.mp4", )" + conv + "}", "video samples are not supported yet");
  expect_bad(R"({"id": "bad", )" + conv + R"(, "video": "v_clip.mp4"})", "video samples are not supported yet");
  expect_bad(R"({"id": "bad", "conversations": []})", "empty conversation");
  expect_bad(R"({"id": "bad", "conversations": "hello"})", "'conversations' must be a list");
  expect_bad(R"({"id": "bad"})", "no 'conversations'");
  expect_bad(R"({"id": "bad", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "x"}]})",
             "'value' must be a string");
  expect_bad(R"({"id": "bad", "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]})",
             "wrong role order");
  expect_bad(R"({"id": "bad", "conversations": [{"from": "robot", "value": "a"}]})", "unknown role 'robot'");
  std::string long_text(2000, 'a');
  for (size_t k = 1; k < long_text.size(); k += 2) long_text[k] = ' ';
  expect_bad(R"({"id": "bad", "conversations": [{"from": "human", "value": ")" + long_text +
                 R"("}, {"from": "gpt", "value": "x"}]})",
             "too long");
  // truncated image bytes (first half of a PNG) as base64
  auto png = llava::testing::make_png(28, 28, 3, 9);
  std::string half = base64_encode(png.data(), png.size() / 2);
  expect_bad(R"({"id": "bad", "images": [")" + half + R"("], )" + conv + "}", "images[0]");
}

TEST_F(TinyData, InvalidJsonGivesLineAndColumn) {
  try {
    data("[\n  {\"id\": 1, \"conversations\": []},\n  {\"id\": 2,, }\n]");
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("test.json: invalid JSON at line 3"), std::string::npos) << m;
    EXPECT_NE(m.find("sample 1"), std::string::npos) << m;
  }
  EXPECT_THROW(data("{\"not\": \"a list\"}"), Error);
  EXPECT_THROW(data("[{\"id\": 1}"), Error);
  EXPECT_THROW(data("[{\"id\": 1}] trailing"), Error);
  EXPECT_EQ(data("[]").size(), 0u);
}

// --- sampler ---

TEST(Sampler, SequentialAndShardedBatches) {
  SamplerOptions o;
  o.shuffle = false;
  o.batch_size = 2;
  Sampler one(std::vector<int32_t>(6, 1), o);
  EXPECT_EQ(one.rank_batches(0), (std::vector<std::vector<int64_t>>{{0, 1}, {2, 3}, {4, 5}}));
  // 2 ranks x batch 1 see, step by step, the samples of 1 rank x batch 2
  o.batch_size = 1;
  o.world_size = 2;
  o.rank = 1;
  Sampler r1(std::vector<int32_t>(6, 1), o);
  EXPECT_EQ(r1.rank_batches(0), (std::vector<std::vector<int64_t>>{{1}, {3}, {5}}));
  // uneven: 5 samples on 2 ranks, the last global batch is padded from the start
  Sampler r1b(std::vector<int32_t>(5, 1), o);
  EXPECT_EQ(r1b.rank_batches(0), (std::vector<std::vector<int64_t>>{{1}, {3}, {0}}));
}

// --dataloader_drop_last: HF drops the incomplete per-device batch, accelerate the incomplete round of them:
// 10 samples on 2 ranks x batch 2 keep the 8 of the two full global batches.
TEST(Sampler, DropLastDropsTheIncompleteGlobalBatch) {
  SamplerOptions o;
  o.shuffle = false;
  o.batch_size = 2;
  o.world_size = 2;
  for (int rank : {0, 1}) {
    o.rank = rank;
    o.drop_last = false;
    Sampler keep(std::vector<int32_t>(10, 1), o);
    o.drop_last = true;
    Sampler drop(std::vector<int32_t>(10, 1), o);
    EXPECT_EQ(keep.batches_per_epoch(), 3);
    EXPECT_EQ(drop.batches_per_epoch(), 2);
    const auto kept = drop.rank_batches(0);
    ASSERT_EQ(static_cast<int64_t>(kept.size()), drop.batches_per_epoch());
    const std::vector<std::vector<int64_t>> want =
        rank == 0 ? std::vector<std::vector<int64_t>>{{0, 1}, {4, 5}} : std::vector<std::vector<int64_t>>{{2, 3}, {6, 7}};
    EXPECT_EQ(kept, want) << "rank " << rank;
    EXPECT_EQ(keep.rank_batches(0).back(), std::vector<int64_t>{8 + rank});  // without: one sample per rank
  }
  // shuffled and modality-grouped orders lose only their tail: 8 distinct samples of the epoch's first 8
  o.rank = 0;
  o.world_size = 1;
  o.batch_size = 4;
  o.shuffle = true;
  o.group_by_modality_length = true;
  std::vector<int32_t> lengths;
  for (int i = 0; i < 11; ++i) lengths.push_back(i % 2 ? 5 + i : -(5 + i));
  Sampler grouped(lengths, o);
  const auto order = grouped.epoch_order(0);
  const auto batches = grouped.rank_batches(0);
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0], std::vector<int64_t>(order.begin(), order.begin() + 4));
  EXPECT_EQ(batches[1], std::vector<int64_t>(order.begin() + 4, order.begin() + 8));
  // fewer samples than one global batch: every batch would be dropped
  try {
    Sampler(std::vector<int32_t>(3, 1), o);
    ADD_FAILURE() << "3 samples with drop_last and batch 4 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--dataloader_drop_last"), std::string::npos) << e.what();
  }
}

TEST(Sampler, ShuffleIsSeededAndPerEpoch) {
  SamplerOptions o;
  o.seed = 7;
  Sampler a(std::vector<int32_t>(50, 1), o), b(std::vector<int32_t>(50, 1), o);
  EXPECT_EQ(a.epoch_order(0), b.epoch_order(0));
  EXPECT_NE(a.epoch_order(0), a.epoch_order(1));
  auto order = a.epoch_order(3);
  std::sort(order.begin(), order.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(order[i], i);
}

// Orders pinned as the sampler gave them at c04439d, before its indices became 4 bytes (the rewrite was also
// compared with that version on 6,080 configurations): an order must never change under a refactor, or a
// resumed run would see other samples than the interrupted one. The first eight indices of epoch 1's order and
// an FNV-1a hash of the last rank's batches of epoch 1 (each batch's indices, then 0xffffffff).
TEST(Sampler, OrdersAreThoseOfEarlierVersions) {
  const int n = 1003;
  std::vector<int32_t> lengths(n);
  for (int i = 0; i < n; ++i) lengths[i] = (i % 10 < 7 ? 1 : -1) * (1 + (i * 37) % 300);
  struct Pinned {
    bool by_modality;
    int batch, world, accumulation, window;
    std::vector<int64_t> first;
    uint64_t hash;
  };
  const std::vector<Pinned> pinned = {
      {false, 4, 1, 1, 0, {973, 341, 99, 281, 693, 958, 514, 492}, 0x38aaa54aed4015c3ull},
      {true, 4, 2, 2, 0, {8, 629, 789, 148, 48, 978, 458, 487}, 0x4ec073a66d370483ull},
      {true, 2, 3, 1, 5, {311, 700, 254, 424, 805, 756, 120, 371}, 0xda94d1210caced66ull},
      {false, 4, 2, 1, 8, {715, 42, 804, 731, 90, 438, 965, 673}, 0x486d7501648e2c60ull},
  };
  for (const Pinned& p : pinned) {
    SamplerOptions o;
    o.seed = 42;
    o.group_by_modality_length = p.by_modality;
    o.batch_size = p.batch;
    o.world_size = p.world;
    o.rank = p.world - 1;
    o.gradient_accumulation_steps = p.accumulation;
    o.group_by_length_window = p.window;
    const Sampler s(lengths, o);
    const std::vector<int64_t> order = s.epoch_order(1);
    const std::string what = "modality " + std::to_string(p.by_modality) + ", batch " + std::to_string(p.batch) +
                             ", world " + std::to_string(p.world) + ", window " + std::to_string(p.window);
    EXPECT_EQ(std::vector<int64_t>(order.begin(), order.begin() + 8), p.first) << what;
    uint64_t h = 1469598103934665603ull;
    for (const auto& batch : s.rank_batches(1).lists()) {
      for (int64_t i : batch) h = (h ^ static_cast<uint64_t>(i)) * 1099511628211ull;
      h = (h ^ 0xffffffffull) * 1099511628211ull;
    }
    EXPECT_EQ(h, p.hash) << what;
  }
}

TEST(Sampler, EpochBatchesHoldFourByteIndices) {
  const EpochBatches b{{0, 4294967295}, {7}};
  EXPECT_EQ(b[0], (std::vector<int64_t>{0, 4294967295}));
  EXPECT_EQ(b.back(), std::vector<int64_t>{7});
  EXPECT_THROW(EpochBatches({{0, -1}}), Error);
  EXPECT_THROW(EpochBatches({{4294967296}}), Error);
}

TEST(Sampler, ModalityGroupingKeepsBatchesSingleModality) {
  std::vector<int32_t> lengths;
  for (int i = 0; i < 103; ++i) lengths.push_back(i % 3 == 0 ? -(5 + i) : (10 + i % 17));
  SamplerOptions o;
  o.group_by_modality_length = true;
  o.batch_size = 4;
  o.world_size = 2;
  Sampler s(lengths, o);
  auto order = s.epoch_order(0);
  ASSERT_EQ(order.size(), 103u);
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 103; ++i) ASSERT_EQ(sorted[i], i);
  // every full megabatch (4 x 2 = 8) but the trailing mixed one is one modality
  size_t full = (order.size() / 8) - 1;
  for (size_t m = 0; m < full; ++m) {
    bool first_image = lengths[order[m * 8]] > 0;
    for (size_t k = 0; k < 8; ++k) EXPECT_EQ(lengths[order[m * 8 + k]] > 0, first_image) << "megabatch " << m;
  }
}

namespace {

// Test data: n lengths in [lo, hi], text-only (negative) with probability text_share.
std::vector<int32_t> random_lengths(size_t n, int lo, int hi, double text_share, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> len(lo, hi);
  std::bernoulli_distribution text(text_share);
  std::vector<int32_t> out;
  for (size_t i = 0; i < n; ++i) out.push_back(text(gen) ? -len(gen) : len(gen));
  return out;
}

// Share of computed positions that are padding when every batch is padded to its longest sample.
double padding_share(const std::vector<std::vector<int64_t>>& batches, const std::vector<int32_t>& lengths) {
  double real = 0, computed = 0;
  for (const auto& b : batches) {
    int64_t mx = 0;
    for (int64_t i : b) real += std::abs(lengths[i]), mx = std::max<int64_t>(mx, std::abs(lengths[i]));
    computed += static_cast<double>(mx) * b.size();
  }
  return 1.0 - real / computed;
}

}  // namespace

TEST(Sampler, LengthWindowOfTheWholeEpochCutsTheSortedOrderIntoBatches) {
  // one window spanning the epoch: the batches are consecutive runs of the length-sorted samples
  const std::vector<int32_t> lengths = random_lengths(64, 1, 1000, 0.0, 3);
  SamplerOptions o;
  o.batch_size = 8;
  o.group_by_length_window = 100;
  auto order = Sampler(lengths, o).epoch_order(0);
  ASSERT_EQ(order.size(), lengths.size());
  std::vector<std::vector<int32_t>> batches;
  for (size_t s = 0; s < order.size(); s += 8) {
    batches.emplace_back();
    for (size_t k = s; k < s + 8; ++k) batches.back().push_back(lengths[order[k]]);
    EXPECT_TRUE(std::is_sorted(batches.back().rbegin(), batches.back().rend())) << "batch " << s / 8;
  }
  std::sort(batches.begin(), batches.end(), [](const auto& a, const auto& b) { return a[0] > b[0]; });
  std::vector<int32_t> all = lengths;
  std::sort(all.rbegin(), all.rend());
  std::vector<int32_t> joined;
  for (const auto& b : batches) joined.insert(joined.end(), b.begin(), b.end());
  EXPECT_EQ(joined, all);
  // the batch order is shuffled, not longest first
  EXPECT_FALSE(
      std::is_sorted(order.begin(), order.end(), [&](int64_t a, int64_t b) { return lengths[a] > lengths[b]; }));
}

TEST(Sampler, LengthWindowsShardEquallyAndReproducibly) {
  const std::vector<int32_t> lengths = random_lengths(1003, 5, 2000, 0.3, 11);
  SamplerOptions o;
  o.seed = 5;
  o.batch_size = 4;
  o.world_size = 3;
  o.group_by_modality_length = true;
  o.group_by_length_window = 6;
  Sampler s(lengths, o);
  auto order = s.epoch_order(0);
  auto sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < static_cast<int64_t>(lengths.size()); ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_EQ(Sampler(lengths, o).epoch_order(0), order);  // same seed, same order (resume recomputes it)
  EXPECT_NE(s.epoch_order(1), order);
  SamplerOptions other = o;
  other.seed = 6;
  EXPECT_NE(Sampler(lengths, other).epoch_order(0), order);
  // full global batches (3 x 4) are single-modality and sorted; only the tail may mix
  const size_t global = 12, full = order.size() / global - 1;
  for (size_t g = 0; g < full; ++g) {
    for (size_t k = 1; k < global; ++k) {
      ASSERT_EQ(lengths[order[g * global + k]] > 0, lengths[order[g * global]] > 0) << "batch " << g;
      ASSERT_GE(std::abs(lengths[order[g * global + k - 1]]), std::abs(lengths[order[g * global + k]]))
          << "batch " << g;
    }
  }
  // every rank: the same number of batches of equal size, disjoint, together the whole epoch
  std::vector<std::vector<std::vector<int64_t>>> ranks;
  for (int r = 0; r < 3; ++r) {
    SamplerOptions ro = o;
    ro.rank = r;
    ranks.push_back(Sampler(lengths, ro).rank_batches(0));
    ASSERT_EQ(static_cast<int64_t>(ranks[r].size()), s.batches_per_epoch());
  }
  std::vector<int64_t> seen;
  for (size_t b = 0; b < ranks[0].size(); ++b)
    for (int r = 0; r < 3; ++r) {
      EXPECT_EQ(ranks[r][b].size(), ranks[0][b].size()) << "batch " << b << " rank " << r;
      seen.insert(seen.end(), ranks[r][b].begin(), ranks[r][b].end());
    }
  EXPECT_EQ(seen.size(), lengths.size() + 2);  // 1003 on 3 ranks: the last global batch padded by 2
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()) - seen.begin(), static_cast<ptrdiff_t>(lengths.size()));
}

TEST(Sampler, LengthWindowsCutPaddingBelowModalityGrouping) {
  const std::vector<int32_t> lengths = random_lengths(8000, 20, 2000, 0.2, 17);
  auto share = [&](bool modality, int window) {
    SamplerOptions o;
    o.batch_size = 16;
    o.group_by_modality_length = modality;
    o.group_by_length_window = window;
    return padding_share(Sampler(lengths, o).rank_batches(0), lengths);
  };
  const double random = share(false, 0), llava = share(true, 0), windowed = share(true, 64);
  std::printf("  padding: random %.3f, modality grouping %.3f, windows of 64 batches %.3f\n", random, llava, windowed);
  EXPECT_GT(llava, 0.2);  // this mix defeats grouping inside one batch
  EXPECT_LT(windowed, 0.05);
  EXPECT_LT(windowed, llava / 4);
  EXPECT_LT(share(false, 64), 0.05);  // without modality grouping too
}
