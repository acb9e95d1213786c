#pragma once
// A small self-made model directory for data tests that must run without ../shared: a SentencePiece
// model trained on a generated corpus, a tokenizer_config.json, an HF LLaVA config.json (28 px images,
// 14 px patches -> 4 positions per image) and a few images.
#include <stb_image_write.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "llava/base64.h"
#include "llava/tokenizer.h"
#include "test_support.h"

namespace llava::testing {

inline std::vector<uint8_t> make_png(int w, int h, int channels, uint8_t seed) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * channels);
  for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 7 + seed * 13);
  std::vector<uint8_t> out;
  stbi_write_png_to_func([](void* ctx, void* data, int size) {
        auto* o = static_cast<std::vector<uint8_t>*>(ctx);
        o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      }, &out, w, h, channels, px.data(), w * channels);
  return out;
}

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

struct TinyDataDir {
  std::string dir, model_dir, image_dir;
  std::string png_base64;  // a valid PNG as base64
};

// Built once per test binary (training the tokenizer takes a fraction of a second).
inline const TinyDataDir& tiny_data_dir() {
  static TinyDataDir d = [] {
    TinyDataDir t;
    t.dir = temp_dir("tiny_data");
    t.model_dir = t.dir + "/model";
    t.image_dir = t.dir + "/images";
    std::filesystem::create_directories(t.model_dir);
    std::filesystem::create_directories(t.image_dir);
    {
      std::ofstream corpus(t.dir + "/corpus.txt");
      const char* words[] = {"red", "green", "blue", "circle", "square", "triangle", "image", "what", "colour",
                             "shape", "is", "the", "in", "first", "second", "third", "USER", "ASSISTANT", "A", "chat"};
      for (int i = 0; i < 400; ++i)
        corpus << words[i % 20] << " " << words[(i * 7) % 20] << " " << words[(i * 3 + 1) % 20] << "? "
               << words[(i * 11) % 20] << ".\n";
    }
    train_sentencepiece(t.dir + "/corpus.txt", t.model_dir + "/tokenizer", 300);
    std::ofstream(t.model_dir + "/tokenizer_config.json") << R"({"legacy": false, "add_bos_token": true})";
    std::ofstream(t.model_dir + "/config.json")
        << R"({"model_type": "llava", "vision_config": {"image_size": 28, "patch_size": 14}})";
    write_bytes(t.image_dir + "/a.png", make_png(28, 28, 3, 1));
    write_bytes(t.image_dir + "/b.png", make_png(40, 20, 3, 2));
    write_bytes(t.image_dir + "/gray.png", make_png(28, 28, 1, 3));
    write_bytes(t.image_dir + "/not_an_image.png", {'h', 'e', 'l', 'l', 'o'});
    auto png = make_png(28, 28, 4, 4);
    t.png_base64 = base64_encode(png.data(), png.size());
    return t;
  }();
  return d;
}

}  // namespace llava::testing
