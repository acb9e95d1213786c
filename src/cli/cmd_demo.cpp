// `llava-train demo-data --output_dir DIR`: the built-in multi-image demo's inputs, made from nothing.
// Each image is one coloured shape; the questions can only be answered by looking at the right image
// ("What colour is the shape in the second image?", "Which image shows a triangle?"). It also trains the
// demo's own small SentencePiece model on the generated text, since a fresh clone ships no tokenizer.
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

constexpr int kImageSize = 56;
const char* kColourNames[] = {"red", "green", "blue", "yellow"};
const uint8_t kColours[][3] = {{220, 40, 40}, {40, 180, 60}, {50, 80, 220}, {230, 210, 40}};
const char* kShapes[] = {"circle", "square", "triangle"};
const char* kOrdinals[] = {"first", "second", "third"};

// Draws one filled shape of a colour on a light, slightly noisy background; position and size jitter.
std::vector<uint8_t> draw_shape(int shape, int colour, Rng& rng) {
  std::vector<uint8_t> px(kImageSize * kImageSize * 3);
  const double cx = 28 + static_cast<double>(rng.uniform(13)) - 6, cy = 28 + static_cast<double>(rng.uniform(13)) - 6;
  const double r = 12 + static_cast<double>(rng.uniform(8));
  for (int y = 0; y < kImageSize; ++y)
    for (int x = 0; x < kImageSize; ++x) {
      double dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      bool inside = shape == 0   ? dx * dx + dy * dy <= r * r
                    : shape == 1 ? std::abs(dx) <= r * 0.85 && std::abs(dy) <= r * 0.85
                                 : dy <= r * 0.8 && dy >= -r && std::abs(dx) <= (dy + r) * 0.6;
      uint8_t* p = &px[(y * kImageSize + x) * 3];
      for (int c = 0; c < 3; ++c)
        p[c] = inside ? kColours[colour][c] : static_cast<uint8_t>(235 + rng.uniform(15));
    }
  return px;
}

std::string capitalised(std::string s) {
  s[0] = static_cast<char>(std::toupper(s[0]));
  return s;
}

json make_sample(int index, const std::string& split, const fs::path& image_dir, Rng& rng, std::ofstream& corpus) {
  const int n = 2 + static_cast<int>(rng.uniform(2));  // 2 or 3 images
  std::vector<int> shapes = {0, 1, 2}, colours(n);
  for (int i = 2; i > 0; --i) std::swap(shapes[i], shapes[rng.uniform(i + 1)]);  // distinct shapes per sample
  json files = json::array();
  std::string intro;
  for (int k = 0; k < n; ++k) {
    colours[k] = static_cast<int>(rng.uniform(4));
    std::string name = split + "_" + std::to_string(index) + "_" + std::to_string(k) + ".png";
    auto px = draw_shape(shapes[k], colours[k], rng);
    if (!stbi_write_png((image_dir / name).string().c_str(), kImageSize, kImageSize, 3, px.data(), kImageSize * 3))
      throw Error("demo-data: cannot write " + (image_dir / name).string());
    files.push_back(name);
    intro += "Image " + std::to_string(k + 1) + ": <image> ";
  }
  auto qa = [&](int kind) -> std::pair<std::string, std::string> {
    int k = static_cast<int>(rng.uniform(n));
    if (kind == 0)
      return {"What colour is the shape in the " + std::string(kOrdinals[k]) + " image?",
              capitalised(kColourNames[colours[k]]) + "."};
    if (kind == 1)
      return {"Which image shows a " + std::string(kShapes[shapes[k]]) + "?",
              "The " + std::string(kOrdinals[k]) + " image."};
    return {"What shape is in the " + std::string(kOrdinals[k]) + " image?", "A " + std::string(kShapes[shapes[k]]) + "."};
  };
  json conv = json::array();
  auto [q1, a1] = qa(static_cast<int>(rng.uniform(3)));
  conv.push_back({{"from", "human"}, {"value", intro + q1}});
  conv.push_back({{"from", "gpt"}, {"value", a1}});
  corpus << q1 << "\n" << a1 << "\n";
  if (rng.uniform(2)) {  // a second round about another image
    auto [q2, a2] = qa(static_cast<int>(rng.uniform(3)));
    conv.push_back({{"from", "human"}, {"value", q2}});
    conv.push_back({{"from", "gpt"}, {"value", a2}});
    corpus << q2 << "\n" << a2 << "\n";
  }
  return {{"id", split + "-" + std::to_string(index)}, {"image", files}, {"conversations", conv}};
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  if (!out) throw Error(path.string() + ": cannot write");
}

}  // namespace

int cmd_demo_data(const Options& o) {
  if (o.output_dir.empty()) throw Error("demo-data: --output_dir is required");
  const fs::path dir(o.output_dir), image_dir = dir / "images", model_dir = dir / "tokenizer";
  fs::create_directories(image_dir);
  fs::create_directories(model_dir);
  const int n_train = o.max_samples > 0 ? static_cast<int>(o.max_samples) : 800, n_eval = 100;
  Rng rng(static_cast<uint64_t>(o.seed));
  std::ofstream corpus(dir / "corpus.txt");
  // The template's fixed text is part of every prompt: the tokenizer should know it.
  corpus << "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions.\nUSER: ASSISTANT: Image 1: Image 2: Image 3:\n";
  json train = json::array(), eval = json::array();
  for (int i = 0; i < n_train; ++i) train.push_back(make_sample(i, "train", image_dir, rng, corpus));
  for (int i = 0; i < n_eval; ++i) eval.push_back(make_sample(i, "eval", image_dir, rng, corpus));
  corpus.close();
  write_text(dir / "train.json", train.dump(1) + "\n");
  write_text(dir / "eval.json", eval.dump(1) + "\n");

  train_sentencepiece((dir / "corpus.txt").string(), (model_dir / "tokenizer").string(), 320);
  write_text(model_dir / "tokenizer_config.json",
             json{{"tokenizer_class", "LlamaTokenizer"}, {"legacy", false}, {"add_bos_token", true},
                  {"add_eos_token", false}, {"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"},
                  {"pad_token", nullptr}, {"model_max_length", 2048}, {"padding_side", "right"}}
                     .dump(2));
  write_text(model_dir / "special_tokens_map.json",
             json{{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"pad_token", "<unk>"}}.dump(2));
  write_text(model_dir / "preprocessor_config.json",
             json{{"image_processor_type", "CLIPImageProcessor"}, {"size", {{"shortest_edge", kImageSize}}},
                  {"crop_size", {{"height", kImageSize}, {"width", kImageSize}}}, {"do_resize", true},
                  {"do_center_crop", true}, {"do_rescale", true}, {"rescale_factor", 1.0 / 255},
                  {"do_normalize", true}, {"do_convert_rgb", true}, {"resample", 3},
                  {"image_mean", {0.48145466, 0.4578275, 0.40821073}},
                  {"image_std", {0.26862954, 0.26130258, 0.27577711}}}
                 .dump(2));
  // The demo model's sizes (HF LlavaConfig layout), read by `llava-train init-model --model_config`:
  // a small CLIP tower over 56 px images (16 patches) and a 2-layer LLaMA over the demo vocabulary.
  json vision = {{"model_type", "clip_vision_model"}, {"hidden_size", 64}, {"intermediate_size", 128},
                 {"num_hidden_layers", 2}, {"num_attention_heads", 4}, {"image_size", kImageSize},
                 {"patch_size", 14}, {"num_channels", 3}, {"hidden_act", "quick_gelu"}, {"layer_norm_eps", 1e-5},
                 {"initializer_range", 0.02}, {"projection_dim", 64}};
  json text = {{"model_type", "llama"}, {"hidden_size", 128}, {"intermediate_size", 256}, {"num_hidden_layers", 2},
               {"num_attention_heads", 4}, {"num_key_value_heads", 2}, {"vocab_size", 320},
               {"max_position_embeddings", 512}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
               {"hidden_act", "silu"}, {"tie_word_embeddings", false}, {"initializer_range", 0.02},
               {"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", 0}};
  write_text(dir / "model_config.json",
             json{{"model_type", "llava"}, {"architectures", {"LlavaForConditionalGeneration"}},
                  {"vision_config", vision}, {"text_config", text}, {"projector_hidden_act", "gelu"},
                  {"vision_feature_layer", -2}, {"vision_feature_select_strategy", "default"},
                  {"image_token_index", 320}, {"ignore_index", -100}, {"pad_token_id", 0},
                  {"tie_word_embeddings", false}, {"vocab_size", 320}}
                 .dump(2));
  std::cout << "demo-data: " << n_train << " training and " << n_eval << " held-out samples (2-3 images each) in "
            << dir.string() << "; tokenizer in " << model_dir.string() << "\n";
  return 0;
}

}  // namespace llava::cli
