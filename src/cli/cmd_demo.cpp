// `llava-train demo-data --output_dir DIR`: the built-in multi-image demo's inputs, made from nothing.
// Each image is one coloured shape. A sample is an interleaved multi-image conversation: 2-3 rounds, each
// bringing its image and asking about it ("Image 2: <image>\nWhat colour is the shape in image 2?"), so
// every answer needs one particular image of the conversation while the others, in the same context and
// drawn independently, would give another answer. captions.json holds one-image captions ("A red
// circle.") for the demo's first stage, which teaches the random model to see. It also trains the demo's
// own small SentencePiece model on the generated text, since a fresh clone ships no tokenizer, and writes
// the demo model's sizes for `init-model`.
#include <stb_image_write.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llava/error.h"
#include "llava/sampler.h"
#include "llava/tokenizer.h"

namespace llava::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// 56 px images cut into 28 px patches: 4 tokens per image, each image's tokens right after its "Image k:"
// label (the demo config uses image_placement: inline).
constexpr int kImageSize = 56;
constexpr int kPatchSize = 28;
// BPE with byte fallback spends 259 pieces on bytes and specials; 512 leaves room for every word of the
// corpus to be one piece (with 320, "Yellow" was "Y" + "ellow" and a wrong first piece made "Rellow").
constexpr int kVocabSize = 512;
constexpr int kNumTrain = 3000, kNumEval = 100, kNumCaptions = 2000;  // multi-image, held-out, stage-1 samples

const char* kColourNames[] = {"red", "green", "blue", "yellow"};
const uint8_t kColours[][3] = {{220, 40, 40}, {40, 180, 60}, {50, 80, 220}, {230, 210, 40}};
const char* kShapes[] = {"circle", "square", "triangle"};

struct DemoImage {
  int shape = 0, colour = 0;
};

// Draws one filled shape of a colour on a light, slightly noisy background, centred, covering all four
// patches; position (+-1 px) and size (radius 17-19 px) jitter a little. The tower is random: a random patch
// projection mixes colour with the exact outline, so a large jitter would leave too little for the
// small model to learn the colour from in the demo's few minutes.
std::vector<uint8_t> draw_shape(const DemoImage& image, Rng& rng) {
  std::vector<uint8_t> px(kImageSize * kImageSize * 3);
  const double cx = 28 + static_cast<double>(rng.uniform(3)) - 1, cy = 28 + static_cast<double>(rng.uniform(3)) - 1;
  const double r = 17 + static_cast<double>(rng.uniform(3));
  for (int y = 0; y < kImageSize; ++y)
    for (int x = 0; x < kImageSize; ++x) {
      double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      bool inside = image.shape == 0   ? dx * dx + dy * dy <= r * r
                    : image.shape == 1 ? std::abs(dx) <= r * 0.85 && std::abs(dy) <= r * 0.85
                                       : dy <= r * 0.8 && dy >= -r && std::abs(dx) <= (dy + r) * 0.6;
      uint8_t* p = &px[(y * kImageSize + x) * 3];
      for (int c = 0; c < 3; ++c)
        p[c] = inside ? kColours[image.colour][c] : static_cast<uint8_t>(235 + rng.uniform(15));
    }
  return px;
}

std::string capitalised(std::string s) {
  s[0] = static_cast<char>(std::toupper(s[0]));
  return s;
}

// The question of round k about its image (kinds: 0 its colour, 1 its shape, 2 both) and the answer.
std::pair<std::string, std::string> question_about(int kind, int k, const DemoImage& image) {
  const std::string label = "image " + std::to_string(k + 1), colour = kColourNames[image.colour],
                    shape = kShapes[image.shape];
  switch (kind) {
    case 0: return {"What colour is the shape in " + label + "?", capitalised(colour) + "."};
    case 1: return {"What shape is in " + label + "?", "A " + shape + "."};
    default: return {"What is in " + label + "?", "A " + colour + " " + shape + "."};
  }
}
constexpr int kQuestionKinds = 3;

// Colours and shapes are drawn independently per image (repeats allowed), so neither an earlier answer
// nor the other images tell the answer of a round.
json make_sample(int index, const std::string& split, const fs::path& image_dir, Rng& rng, std::ofstream& corpus) {
  const int n = 2 + static_cast<int>(rng.uniform(2));  // 2 or 3 images
  json files = json::array(), conv = json::array();
  for (int k = 0; k < n; ++k) {
    const DemoImage image{static_cast<int>(rng.uniform(3)), static_cast<int>(rng.uniform(4))};
    const std::string name = split + "_" + std::to_string(index) + "_" + std::to_string(k) + ".png";
    auto px = draw_shape(image, rng);
    if (!stbi_write_png((image_dir / name).string().c_str(), kImageSize, kImageSize, 3, px.data(), kImageSize * 3))
      throw Error("demo-data: cannot write " + (image_dir / name).string());
    files.push_back(name);
    auto [q, a] = question_about(static_cast<int>(rng.uniform(kQuestionKinds)), k, image);
    conv.push_back({{"from", "human"}, {"value", "Image " + std::to_string(k + 1) + ": <image>\n" + q}});
    conv.push_back({{"from", "gpt"}, {"value", a}});
    corpus << q << "\n" << a << "\n";
  }
  return {{"id", split + "-" + std::to_string(index)}, {"image", files}, {"conversations", conv}};
}

// A stage-1 sample in the format of LLaVA's caption pre-training data: one image, its description.
json make_caption_sample(int index, const fs::path& image_dir, Rng& rng, std::ofstream& corpus) {
  const DemoImage image{static_cast<int>(rng.uniform(3)), static_cast<int>(rng.uniform(4))};
  const std::string name = "pretrain_" + std::to_string(index) + ".png";
  auto px = draw_shape(image, rng);
  if (!stbi_write_png((image_dir / name).string().c_str(), kImageSize, kImageSize, 3, px.data(), kImageSize * 3))
    throw Error("demo-data: cannot write " + (image_dir / name).string());
  const std::string caption = "A " + std::string(kColourNames[image.colour]) + " " + kShapes[image.shape] + ".";
  corpus << caption << "\n";
  return {{"id", "pretrain-" + std::to_string(index)},
          {"image", name},
          {"conversations", json::array({{{"from", "human"}, {"value", "<image>"}}, {{"from", "gpt"}, {"value", caption}}})}};
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw Error(path.string() + ": cannot write");
}

void write_tokenizer_files(const fs::path& corpus, const fs::path& dir) {
  train_sentencepiece(corpus.string(), (dir / "tokenizer").string(), kVocabSize);
  write_text(dir / "tokenizer_config.json",
             json{{"tokenizer_class", "LlamaTokenizer"}, {"legacy", true}, {"add_bos_token", true},
                  {"add_eos_token", false}, {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"},
                  {"pad_token", nullptr}, {"model_max_length", 2048}, {"padding_side", "right"}}
                     .dump(2));
  write_text(dir / "special_tokens_map.json",
             json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<unk>"}}.dump(2));
  write_text(dir / "preprocessor_config.json",
             json{{"image_processor_type", "CLIPImageProcessor"}, {"size", {{"shortest_edge", kImageSize}}},
                  {"crop_size", {{"height", kImageSize}, {"width", kImageSize}}}, {"do_resize", true},
                  {"do_center_crop", true}, {"do_rescale", true}, {"rescale_factor", 1.0 / 255},
                  {"do_normalize", true}, {"do_convert_rgb", true}, {"resample", 3},
                  {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
                  {"image_std", {0.26862954, 0.26130258, 0.27577711}}}
                 .dump(2));
}

// The demo model's sizes (HF LlavaConfig layout), read by `llava-train init-model --model_config`:
// a small CLIP tower (4 patches per image) and a small LLaMA over the demo vocabulary.
json demo_model_config() {
  json vision = {{"model_type", "clip_vision_model"}, {"hidden_size", 64}, {"intermediate_size", 128},
                 {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"image_size", kImageSize},
                 {"patch_size", kPatchSize}, {"num_channels", 3}, {"hidden_act", "quick_gelu"},
                 {"layer_norm_eps", 1e-5}, {"initializer_range", 0.02}, {"projection_dim", 64}};
  json text = {{"model_type", "llama"}, {"hidden_size", 128}, {"intermediate_size", 256}, {"num_hidden_layers", 4},
               {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", kVocabSize},
               {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
               {"hidden_act", "silu"}, {"tie_word_embeddings", false}, {"initializer_range", 0.02},
               {"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 0}};
  return {{"model_type", "llava"}, {"architectures", {"LlavaForConditionalGeneration"}},
          {"vision_config", vision}, {"text_config", text}, {"projector_hidden_act", "gelu"},
          {"vision_feature_layer", -2}, {"vision_feature_select_strategy", "default"},
          {"image_token_index", kVocabSize}, {"ignore_index", -100}, {"pad_token_id", 0},
          {"tie_word_embeddings", false}, {"vocab_size", kVocabSize}};
}

}  // namespace

int cmd_demo_data(const Options& o) {
  if (o.output_dir.empty()) throw Error("demo-data: --output_dir is required");
  const fs::path dir(o.output_dir), image_dir = dir / "images", tokenizer_dir = dir / "tokenizer";
  fs::create_directories(image_dir);
  fs::create_directories(tokenizer_dir);
  Rng rng(static_cast<uint64_t>(o.seed));
  std::ofstream corpus(dir / "corpus.txt");
  // The template's fixed text is part of every prompt: the tokenizer should learn its words as pieces too,
  // so it is repeated as often as the questions are.
  const std::string template_text =
      "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
      "detailed, and polite answers to the user's questions.\nUSER: ASSISTANT: Image 1: Image 2: Image 3:\n";
  json train = json::array(), eval = json::array();
  for (int i = 0; i < kNumTrain; ++i) {
    train.push_back(make_sample(i, "train", image_dir, rng, corpus));
    corpus << template_text;
  }
  for (int i = 0; i < kNumEval; ++i) eval.push_back(make_sample(i, "eval", image_dir, rng, corpus));
  json captions = json::array();
  for (int i = 0; i < kNumCaptions; ++i) captions.push_back(make_caption_sample(i, image_dir, rng, corpus));
  corpus.close();
  write_text(dir / "captions.json", captions.dump(1) + "\n");
  write_text(dir / "train.json", train.dump(1) + "\n");
  write_text(dir / "eval.json", eval.dump(1) + "\n");
  write_tokenizer_files(dir / "corpus.txt", tokenizer_dir);
  write_text(dir / "model_config.json", demo_model_config().dump(2));
  std::cout << "demo-data: " << kNumTrain << " training and " << kNumEval << " held-out samples (2-3 images each), "
            << kNumCaptions << " captions in "
            << dir.string() << "; tokenizer in " << tokenizer_dir.string() << "\n";
  return 0;
}

}  // namespace llava::cli
