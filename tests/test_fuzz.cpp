// Random and mutated inputs into the JSON index, base64 and image decoders: errors are fine, crashes are not.
#include <gtest/gtest.h>

#include "llava/base64.h"
#include "llava/dataset.h"
#include "llava/error.h"
#include "llava/image.h"
#include "llava/sampler.h"
#include "image_test_support.h"
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

namespace {

// A small valid file of every format the decoder reads, made by that format's own encoder.
std::vector<std::pair<std::string, std::vector<uint8_t>>> image_seeds() {
  using namespace llava::testing;
  const int w = 24, h = 18;
  const std::vector<uint8_t> rgb = test_pixels(w, h, 3, 1), cmyk = test_pixels(w, h, 4, 2);
  std::vector<uint8_t> idx(w * h), palette(16 * 3);
  for (int i = 0; i < w * h; ++i) idx[i] = static_cast<uint8_t>(i * 7 % 16);
  for (size_t i = 0; i < palette.size(); ++i) palette[i] = static_cast<uint8_t>(i * 11);
  std::vector<std::vector<uint8_t>> rows, index_rows;
  for (int y = 0; y < h; ++y) {
    rows.emplace_back(rgb.begin() + y * w * 3, rgb.begin() + (y + 1) * w * 3);
    index_rows.emplace_back(idx.begin() + y * w, idx.begin() + (y + 1) * w);
  }
  const auto rgb_lzw = encode_tiff(w, h, rows, [](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_LZW);
  }, 5);
  std::vector<uint16_t> map(256 * 3);
  for (size_t i = 0; i < map.size(); ++i) map[i] = static_cast<uint16_t>(i * 251);
  const auto palette_deflate = encode_tiff(w, h, index_rows, [&](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_PALETTE);
    TIFFSetField(t, TIFFTAG_COLORMAP, &map[0], &map[256], &map[512]);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
  });
  return {{"jpeg", encode_jpeg(rgb, w, h, TJPF_RGB, TJSAMP_420)},
          {"jpeg-ycck", encode_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_422)},
          {"png", make_png(w, h, 3, 1)},
          {"png-grey-alpha", make_png(w, h, 2, 2)},
          {"gif", encode_gif(idx, w, h, palette, 3)},
          {"webp-lossless", encode_webp(cmyk, w, h, 4, true)},
          {"webp-lossy", encode_webp(rgb, w, h, 3, false)},
          {"tiff-lzw", rgb_lzw},
          {"tiff-palette", palette_deflate},
          {"bmp", encode_bmp(rgb, w, h, 3)}};
}

bool printable(const std::string& s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) return false;
  return true;
}

}  // namespace

// Every decoder against cut-off, mutated and random-after-the-magic bytes: an image of consistent size or an
// llava::Error whose message is printable text (never the input's bytes); no crash, no other exception.
TEST(Fuzz, EveryImageFormatSurvivesTruncationAndMutation) {
  Rng rng(4321);
  int decoded = 0, rejected = 0;
  auto attempt = [&](const std::vector<uint8_t>& bytes, const std::string& what) {
    try {
      RgbImage img = decode_image(bytes.data(), bytes.size());
      ASSERT_EQ(img.pixels.size(), static_cast<size_t>(img.width) * img.height * 3) << what;
      ++decoded;
    } catch (const Error& e) {
      ASSERT_TRUE(printable(e.what())) << what << ": " << e.what();
      ++rejected;
    }
  };
  for (const auto& [name, seed] : image_seeds()) {
    ASSERT_FALSE(seed.empty()) << name;
    attempt(seed, name);
    for (size_t n = 0; n < seed.size(); n += n < 64 ? 1 : std::max<size_t>(1, seed.size() / 97))
      attempt(std::vector<uint8_t>(seed.begin(), seed.begin() + n), name + " cut at " + std::to_string(n));
    for (int iter = 0; iter < 400; ++iter) attempt(mutate(seed, rng), name + " mutated");
    for (int iter = 0; iter < 50; ++iter) {  // the format's first 12 bytes, then noise
      std::vector<uint8_t> bytes(seed.begin(), seed.begin() + std::min<size_t>(12, seed.size()));
      bytes.resize(bytes.size() + rng.uniform(400));
      for (size_t k = 12; k < bytes.size(); ++k) bytes[k] = static_cast<uint8_t>(rng.next());
      attempt(bytes, name + " magic + noise");
    }
  }
  std::printf("image fuzz (all formats): %d decoded, %d rejected with an error\n", decoded, rejected);
  EXPECT_GT(decoded, 10);
  EXPECT_GT(rejected, 1000);
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
