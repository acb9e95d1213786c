// Random and mutated inputs into the JSON index, base64 and image decoders: errors are fine, crashes are not.
#include <gtest/gtest.h>

#include "llava/base64.h"
#include "llava/dataset.h"
#include "llava/error.h"
#include "llava/image.h"
#include "llava/sampler.h"
#include "test_data_support.h"

using namespace llava;

namespace {

std::vector<uint8_t> mutate(std::vector<uint8_t> bytes, Rng& rng) {
  int edits = 1 + static_cast<int>(rng.uniform(8));
  for (int e = 0; e < edits && !bytes.empty(); ++e) {
    size_t at = rng.uniform(bytes.size());
    switch (rng.uniform(4)) {
      case 0: bytes[at] = static_cast<uint8_t>(rng.next()); break;
      case 1: bytes.erase(bytes.begin() + at); break;
      case 2: bytes.insert(bytes.begin() + at, static_cast<uint8_t>(rng.next())); break;
      case 3: bytes.resize(at); break;  // truncate
    }
  }
  return bytes;
}

}  // namespace

TEST(Fuzz, ImageDecoderSurvivesMutatedAndRandomBytes) {
  Rng rng(1234);
  std::vector<std::vector<uint8_t>> seeds = {llava::testing::make_png(20, 12, 3, 1), llava::testing::make_png(9, 9, 1, 2),
                                             llava::testing::make_png(16, 16, 4, 3)};
  int decoded = 0, rejected = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::vector<uint8_t> bytes;
    if (iter % 5 == 0) {
      bytes.resize(rng.uniform(300));
      for (auto& b : bytes) b = static_cast<uint8_t>(rng.next());
      if (iter % 10 == 0 && bytes.size() > 4) bytes[0] = 0xFF, bytes[1] = 0xD8, bytes[2] = 0xFF;  // JPEG magic
    } else {
      bytes = mutate(seeds[iter % seeds.size()], rng);
    }
    try {
      RgbImage img = decode_image(bytes.data(), bytes.size());
      ASSERT_EQ(img.pixels.size(), static_cast<size_t>(img.width) * img.height * 3);
      ++decoded;
    } catch (const Error&) {
      ++rejected;
    }
  }
  std::printf("image fuzz: %d decoded, %d rejected with an error\n", decoded, rejected);
  EXPECT_GT(rejected, 0);
}

TEST(Fuzz, Base64SurvivesRandomText) {
  Rng rng(99);
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n:;,.data";
  for (int iter = 0; iter < 5000; ++iter) {
    std::string s(rng.uniform(64), ' ');
    for (auto& c : s) c = iter % 2 ? alphabet[rng.uniform(alphabet.size())] : static_cast<char>(rng.next());
    std::vector<uint8_t> out;
    if (base64_decode(s, out)) {  // whatever decodes must re-encode to the same bytes
      std::vector<uint8_t> again;
      ASSERT_TRUE(base64_decode(base64_encode(out.data(), out.size()), again));
      ASSERT_EQ(again, out);
    }
  }
}

TEST(Fuzz, DatasetIndexSurvivesMutatedJson) {
  const std::string base =
      R"([{"id": "a", "image": ["x.png"], "conversations": [{"from": "human", "value": "<image> \"q\" \\ \u00e9"},)"
      R"( {"from": "gpt", "value": "r"}]}, {"id": 2, "images": ["aGk="], "conversations": []}, 3, "s", null])";
  Rng rng(7);
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bytes = mutate(std::vector<uint8_t>(base.begin(), base.end()), rng);
    try {
      Dataset ds = Dataset::from_text(std::string(bytes.begin(), bytes.end()), "/nonexistent", "fuzz.json");
      ++opened;
      for (size_t i = 0; i < ds.size(); ++i) {
        try {
          ds.sample(i);
        } catch (const Error&) {
        }
      }
    } catch (const Error& e) {
      ++rejected;
      ASSERT_NE(std::string(e.what()).find("fuzz.json"), std::string::npos) << e.what();
    }
  }
  std::printf("json fuzz: %d opened, %d rejected with an error\n", opened, rejected);
  EXPECT_GT(opened, 0);
  EXPECT_GT(rejected, 0);
}
