// Image decoding and CLIP preprocessing: fixture parity (PIL + CLIPImageProcessor outputs) and
// self-contained checks on images encoded here (stb_image_write, TurboJPEG).
#include <nlohmann/json.hpp>
#include <stb_image_write.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include "llava/base64.h"
#include "llava/error.h"
#include "llava/image.h"
#include "llava/safetensors.h"
#include "test_support.h"

namespace {

using llava::Error;
using llava::RgbImage;
using llava::PixelTensor;
using llava::clip_preprocess;
using llava::resize_bicubic;
using llava::testing::fixture;

const std::string kTiny = "llava-tiny/";

std::vector<uint8_t> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

RgbImage decode(const std::vector<uint8_t>& b, int min_short_side = 0) {
  return llava::decode_image(b.data(), b.size(), min_short_side);
}

// Smooth synthetic picture (JPEG-friendly), width x height x channels.
std::vector<uint8_t> gradient(int w, int h, int channels) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * channels);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c)
        px[(static_cast<size_t>(y) * w + x) * channels + c] =
            static_cast<uint8_t>((x * 255 / std::max(w - 1, 1) + y * 97 / std::max(h - 1, 1) + c * 60) % 256);
  return px;
}

std::vector<uint8_t> encode_png(const std::vector<uint8_t>& px, int w, int h, int channels) {
  std::vector<uint8_t> out;
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  EXPECT_NE(stbi_write_png_to_func(sink, &out, w, h, channels, px.data(), w * channels), 0);
  return out;
}

std::vector<uint8_t> encode_jpeg(const std::vector<uint8_t>& px, int w, int h, int pixel_format, int subsamp,
                                 int quality = 95) {
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  EXPECT_EQ(tjCompress2(tj, px.data(), w, 0, h, pixel_format, &buf, &size, subsamp, quality, 0), 0)
      << tjGetErrorStr2(tj);
  std::vector<uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

RgbImage solid(int w, int h, std::array<uint8_t, 3> rgb) {
  RgbImage im;
  im.width = w;
  im.height = h;
  for (int i = 0; i < w * h; ++i) im.pixels.insert(im.pixels.end(), rgb.begin(), rgb.end());
  return im;
}

// ---- fixtures -----------------------------------------------------------------------------------

TEST(ImageFixtures, ProcessorConfigFromJson) {
  LLAVA_REQUIRE_FIXTURES();
  auto c = llava::ImageProcessorConfig::from_json_file(fixture(kTiny + "preprocessor_config.json"));
  EXPECT_EQ(c.shortest_edge, 56);
  EXPECT_EQ(c.crop_height, 56);
  EXPECT_EQ(c.crop_width, 56);
  EXPECT_TRUE(c.do_resize && c.do_center_crop && c.do_rescale && c.do_normalize);
  EXPECT_DOUBLE_EQ(c.rescale_factor, 0.00392156862745098);
  EXPECT_FLOAT_EQ(c.mean[0], 0.48145466f);
  EXPECT_FLOAT_EQ(c.std[2], 0.27577711f);
  EXPECT_EQ(c.pad_background(), (std::array<uint8_t, 3>{122, 116, 104}));
}

// Every data-set image (files and base64) through decode + CLIP preprocessing vs the reference
// pixel_values: the images are 56x56, so this is decode + rescale/normalize, exact to 1e-6.
TEST(ImageFixtures, DatasetPixelValues) {
  LLAVA_REQUIRE_FIXTURES();
  auto cfg = llava::ImageProcessorConfig::from_json_file(fixture(kTiny + "preprocessor_config.json"));
  auto expected = llava::SafetensorsFile::open(fixture(kTiny + "expected/pixel_values.safetensors"));
  auto data = nlohmann::json::parse(llava::testing::read_file(fixture(kTiny + "data.json")));
  auto as_list = [](const nlohmann::json& v) {
    std::vector<std::string> out;
    if (v.is_string()) out.push_back(v.get<std::string>());
    if (v.is_array())
      for (const auto& e : v) out.push_back(e.get<std::string>());
    return out;
  };
  int checked = 0;
  double worst = 0;
  for (size_t i = 0; i < data.size(); ++i) {
    std::vector<RgbImage> images;
    if (data[i].contains("image"))
      for (const auto& f : as_list(data[i]["image"]))
        images.push_back(llava::load_image_file(fixture(kTiny + "images/" + f)));
    if (data[i].contains("images"))
      for (const auto& b64 : as_list(data[i]["images"])) {
        std::vector<uint8_t> bytes;
        ASSERT_TRUE(llava::base64_decode(b64, bytes)) << "sample " << i;
        images.push_back(decode(bytes));
      }
    const std::string name = "sample" + std::to_string(i) + ".pixel_values";
    const auto* info = expected->find(name);
    if (images.empty()) {
      EXPECT_EQ(info, nullptr) << name;
      continue;
    }
    ASSERT_NE(info, nullptr) << name;
    ASSERT_EQ(info->shape, (std::vector<int64_t>{static_cast<int64_t>(images.size()), 3, 56, 56})) << name;
    const auto ref = expected->to_float(*info);
    for (size_t k = 0; k < images.size(); ++k) {
      const auto t = llava::clip_preprocess(images[k], cfg, false);
      ASSERT_EQ(t.data.size(), size_t{3 * 56 * 56});
      double max_diff = 0;
      for (size_t j = 0; j < t.data.size(); ++j)
        max_diff = std::max(max_diff, std::fabs(double(t.data[j]) - ref[k * t.data.size() + j]));
      EXPECT_LE(max_diff, 1e-6) << name << " image " << k;
      worst = std::max(worst, max_diff);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 9);
  std::printf("[ dataset ] %d images, max |diff| %.3g\n", checked, worst);
}

// Non-square PNG/JPEG through decode, plain and pad preprocessing (Pillow BICUBIC resize).
TEST(ImageFixtures, PreprocessCases) {
  LLAVA_REQUIRE_FIXTURES();
  auto cfg = llava::ImageProcessorConfig::from_json_file(fixture(kTiny + "preprocessor_config.json"));
  auto expected = llava::SafetensorsFile::open(fixture(kTiny + "expected/preprocess.safetensors"));
  auto cases = nlohmann::json::parse(llava::testing::read_file(fixture(kTiny + "expected/preprocess.json")))["cases"];
  ASSERT_EQ(cases.size(), 4u);
  for (const auto& c : cases) {
    const std::string file = c["file"].get<std::string>();
    const std::string key = file.substr(file.rfind('/') + 1);
    const bool jpeg = c["format"] == "jpeg";
    SCOPED_TRACE(file);
    RgbImage im = llava::load_image_file(fixture(kTiny + file));
    ASSERT_EQ(im.width, c["width"].get<int>());
    ASSERT_EQ(im.height, c["height"].get<int>());
    const auto bg = c["pad_background_rgb"].get<std::array<uint8_t, 3>>();
    EXPECT_EQ(cfg.pad_background(), bg);

    const auto rgb = expected->to_float(expected->at(key + ".decoded_rgb_uint8"));
    ASSERT_EQ(rgb.size(), im.pixels.size());
    int max_level = 0;
    for (size_t j = 0; j < rgb.size(); ++j) max_level = std::max(max_level, std::abs(int(rgb[j]) - int(im.pixels[j])));
    EXPECT_LE(max_level, jpeg ? 3 : 0);

    for (bool pad : {false, true}) {
      const auto t = llava::clip_preprocess(im, cfg, pad);
      const auto ref = expected->to_float(expected->at(key + (pad ? ".pad" : ".plain")));
      ASSERT_EQ(t.channels * t.height * t.width, 3 * 56 * 56);
      ASSERT_EQ(t.data.size(), ref.size());
      double sum = 0, max_diff = 0;
      for (size_t j = 0; j < ref.size(); ++j) {
        const double d = std::fabs(double(t.data[j]) - ref[j]);
        sum += d;
        max_diff = std::max(max_diff, d);
      }
      const double mean_diff = sum / ref.size();
      std::printf("[ preprocess ] %-20s decode max %d levels, %-5s mean |diff| %.3g max |diff| %.3g\n", key.c_str(),
                  max_level, pad ? "pad" : "plain", mean_diff, max_diff);
      EXPECT_LE(mean_diff, 0.01) << (pad ? "pad" : "plain");
      EXPECT_LE(max_diff, 0.15) << (pad ? "pad" : "plain");
    }
  }
}

// ---- config -------------------------------------------------------------------------------------

std::string write_temp(const std::string& name, const std::string& text) {
  const std::string path = llava::testing::temp_dir("image_cfg") + "/" + name;
  std::ofstream(path) << text;
  return path;
}

TEST(ImageConfig, IntSizesScalarMeanAndDefaults) {
  auto c = llava::ImageProcessorConfig::from_json_file(
      write_temp("a.json", R"({"size": 336, "crop_size": 320, "image_mean": 0.5, "image_std": [0.5, 0.25, 0.125],
                              "do_center_crop": false, "rescale_factor": 0.5})"));
  EXPECT_EQ(c.shortest_edge, 336);
  EXPECT_EQ(c.crop_height, 320);
  EXPECT_EQ(c.crop_width, 320);
  EXPECT_FALSE(c.do_center_crop);
  EXPECT_TRUE(c.do_resize);
  EXPECT_EQ(c.mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(c.std, (std::array<float, 3>{0.5f, 0.25f, 0.125f}));
  EXPECT_DOUBLE_EQ(c.rescale_factor, 0.5);
  EXPECT_EQ(c.pad_background(), (std::array<uint8_t, 3>{127, 127, 127}));

  // Absent keys: CLIPImageProcessor's defaults (224, OpenAI CLIP statistics).
  auto d = llava::ImageProcessorConfig::from_json_file(write_temp("b.json", "{}"));
  EXPECT_EQ(d.shortest_edge, 224);
  EXPECT_EQ(d.crop_width, 224);
  EXPECT_EQ(d.pad_background(), (std::array<uint8_t, 3>{122, 116, 104}));

  auto e = llava::ImageProcessorConfig::clip_defaults(336);
  EXPECT_EQ(e.shortest_edge, 336);
  EXPECT_EQ(e.crop_height, 336);
  EXPECT_EQ(e.crop_width, 336);
  EXPECT_THROW(llava::ImageProcessorConfig::clip_defaults(0), Error);
}

// SiglipImageProcessor: exact {height, width} resize, no crop, mean = std = 0.5 by default.
TEST(ImageConfig, SiglipProcessorResizesToTheExactSizeWithoutCrop) {
  auto c = llava::ImageProcessorConfig::from_json_file(write_temp(
      "siglip.json", R"({"image_processor_type": "SiglipImageProcessor", "size": {"height": 32, "width": 48},
                         "resample": 3, "crop_size": 16, "do_center_crop": true})"));
  EXPECT_EQ(c.resize_height, 32);
  EXPECT_EQ(c.resize_width, 48);
  EXPECT_FALSE(c.do_center_crop);  // SigLIP has no crop step, whatever the file says
  EXPECT_EQ(c.mean, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(c.std, (std::array<float, 3>{0.5f, 0.5f, 0.5f}));
  auto d = llava::ImageProcessorConfig::from_json_file(write_temp("siglip_default.json",
                                                                  R"({"image_processor_type": "SiglipImageProcessor"})"));
  EXPECT_EQ(d.resize_height, 224);
  EXPECT_EQ(d.resize_width, 224);
  // A CLIP processor given {height, width} resizes exactly, then crops as configured.
  auto e = llava::ImageProcessorConfig::from_json_file(write_temp("clip_hw.json", R"({"size": {"height": 40, "width": 30}})"));
  EXPECT_EQ(e.resize_height, 40);
  EXPECT_EQ(e.resize_width, 30);
  EXPECT_TRUE(e.do_center_crop);

  // The pipeline: a 50x20 image squashed to 48x32 (no aspect ratio kept), uint8 = Pillow's resize, then the
  // float formula of the fixtures' README item 5 with mean = std = 0.5.
  RgbImage img;
  img.width = 50;
  img.height = 20;
  for (int i = 0; i < 50 * 20 * 3; ++i) img.pixels.push_back(static_cast<uint8_t>((i * 37 + i / 7) % 256));
  PixelTensor t = clip_preprocess(img, c, false);
  ASSERT_EQ(t.width, 48);
  ASSERT_EQ(t.height, 32);
  RgbImage r = resize_bicubic(img, 48, 32);
  double max_diff = 0;
  for (int ch = 0; ch < 3; ++ch)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 48; ++x) {
        const float u = static_cast<float>(static_cast<double>(r.pixels[(y * 48 + x) * 3 + ch]) * (1.0 / 255.0));
        const float want = (u - 0.5f) / 0.5f;
        max_diff = std::max(max_diff, std::abs(double(want) - t.data[(ch * 32 + y) * 48 + x]));
      }
  std::printf("  SigLIP squash 50x20 -> 48x32: max |diff| vs resize_bicubic + formula %.1e\n", max_diff);
  EXPECT_EQ(max_diff, 0.0);
}

TEST(ImageConfig, BadConfigsThrowNamingTheFile) {
  for (const auto& [name, text] : std::vector<std::pair<std::string, std::string>>{
           {"json.json", "{not json"},
           {"hw.json", R"({"size": {"height": 0, "width": 384}})"},
           {"siglip_edge.json", R"({"image_processor_type": "SiglipImageProcessor", "size": {"shortest_edge": 384}})"},
           {"kind.json", R"({"image_processor_type": "BlipImageProcessor"})"},
           {"mean.json", R"({"image_mean": [0.5, 0.5]})"},
           {"std.json", R"({"image_std": [0.5, 0.0, 0.5]})"},
           {"type.json", R"({"do_resize": "yes"})"},
           {"resample.json", R"({"resample": 2})"},
           {"neg.json", R"({"size": {"shortest_edge": -1}})"}}) {
    const std::string path = write_temp(name, text);
    try {
      llava::ImageProcessorConfig::from_json_file(path);
      ADD_FAILURE() << name << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(llava::ImageProcessorConfig::from_json_file("/nonexistent/preprocessor_config.json"), Error);
}

// ---- decoding -----------------------------------------------------------------------------------

TEST(ImageDecode, PngChannelLayoutsBecomeRgb) {
  const int w = 7, h = 5;
  const auto gray = gradient(w, h, 1);
  RgbImage g = decode(encode_png(gray, w, h, 1));
  ASSERT_EQ(g.width, w);
  ASSERT_EQ(g.height, h);
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(g.pixels[3 * i + c], gray[i]);

  auto ga = gradient(w, h, 2);
  RgbImage g2 = decode(encode_png(ga, w, h, 2));
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(g2.pixels[3 * i + c], ga[2 * i]);

  // RGBA: alpha dropped, colour kept as stored (PIL's convert("RGB") does not composite).
  auto rgba = gradient(w, h, 4);
  for (int i = 0; i < w * h; ++i) rgba[4 * i + 3] = static_cast<uint8_t>(i % 2 ? 0 : 128);
  RgbImage c4 = decode(encode_png(rgba, w, h, 4));
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(c4.pixels[3 * i + c], rgba[4 * i + c]);

  auto rgb = gradient(w, h, 3);
  EXPECT_EQ(decode(encode_png(rgb, w, h, 3)).pixels, rgb);
}

// stb_image_write's zlib compressor (exported by libstb) for hand-built PNGs: it writes neither
// palette nor 16-bit images itself.
extern "C" unsigned char* stbi_zlib_compress(unsigned char* data, int data_len, int* out_len, int quality);

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0xFFFFFFFFu) {
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return crc;
}

void put_be32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (24 - 8 * i)));
}

void png_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& body) {
  put_be32(out, static_cast<uint32_t>(body.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), body.begin(), body.end());
  put_be32(out, crc32(&out[start], out.size() - start) ^ 0xFFFFFFFFu);
}

// rows: already-serialised scanlines without the filter byte.
std::vector<uint8_t> build_png(int w, int h, int bit_depth, int color_type, const std::vector<uint8_t>& rows,
                               const std::vector<std::pair<const char*, std::vector<uint8_t>>>& extra = {}) {
  std::vector<uint8_t> out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {static_cast<uint8_t>(bit_depth), static_cast<uint8_t>(color_type), 0, 0, 0});
  png_chunk(out, "IHDR", ihdr);
  for (const auto& [type, body] : extra) png_chunk(out, type, body);
  const size_t row_bytes = rows.size() / h;
  std::vector<uint8_t> filtered;
  for (int y = 0; y < h; ++y) {
    filtered.push_back(0);
    filtered.insert(filtered.end(), rows.begin() + y * row_bytes, rows.begin() + (y + 1) * row_bytes);
  }
  int zlen = 0;
  unsigned char* z = stbi_zlib_compress(filtered.data(), static_cast<int>(filtered.size()), &zlen, 8);
  png_chunk(out, "IDAT", std::vector<uint8_t>(z, z + zlen));
  std::free(z);
  png_chunk(out, "IEND", {});
  return out;
}

// Palette PNG with per-entry alpha (tRNS): PIL's convert("RGB") expands the palette, ignores alpha.
TEST(ImageDecode, PalettePngExpanded) {
  const std::vector<uint8_t> palette = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  const int w = 5, h = 3;
  std::vector<uint8_t> idx;
  for (int i = 0; i < w * h; ++i) idx.push_back(static_cast<uint8_t>(i % 4));
  RgbImage im = decode(build_png(w, h, 8, 3, idx, {{"PLTE", palette}, {"tRNS", {255, 0, 128, 7}}}));
  ASSERT_EQ(im.width, w);
  ASSERT_EQ(im.height, h);
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(im.pixels[3 * i + c], palette[3 * idx[i] + c]) << i;
}

// 16-bit RGB PNG: the high byte of each sample, as Pillow's "RGB;16B" unpacker keeps.
TEST(ImageDecode, Png16BitKeepsHighByte) {
  const int w = 3, h = 2;
  std::vector<uint8_t> rows;
  std::vector<uint8_t> high;
  for (int i = 0; i < w * h * 3; ++i) {
    const uint16_t v = static_cast<uint16_t>(i * 3000 + 0x7F);
    rows.insert(rows.end(), {static_cast<uint8_t>(v >> 8), static_cast<uint8_t>(v & 0xFF)});
    high.push_back(static_cast<uint8_t>(v >> 8));
  }
  EXPECT_EQ(decode(build_png(w, h, 16, 2, rows)).pixels, high);
}

TEST(ImageDecode, BmpViaStb) {
  const int w = 6, h = 4;
  auto rgb = gradient(w, h, 3);
  std::vector<uint8_t> out;
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  ASSERT_NE(stbi_write_bmp_to_func(sink, &out, w, h, 3, rgb.data()), 0);
  EXPECT_EQ(decode(out).pixels, rgb);
}

TEST(ImageDecode, JpegRoundTrip) {
  const int w = 64, h = 48;
  const auto rgb = gradient(w, h, 3);
  RgbImage im = decode(encode_jpeg(rgb, w, h, TJPF_RGB, TJSAMP_444, 98));
  ASSERT_EQ(im.width, w);
  ASSERT_EQ(im.height, h);
  double sum = 0;
  for (size_t i = 0; i < rgb.size(); ++i) sum += std::abs(int(im.pixels[i]) - int(rgb[i]));
  EXPECT_LT(sum / rgb.size(), 3.0);

  // Grayscale JPEG: grey replicated into R, G, B.
  const auto gray = gradient(w, h, 1);
  RgbImage g = decode(encode_jpeg(gray, w, h, TJPF_GRAY, TJSAMP_GRAY));
  for (int i = 0; i < w * h; ++i) {
    ASSERT_EQ(g.pixels[3 * i], g.pixels[3 * i + 1]);
    ASSERT_EQ(g.pixels[3 * i], g.pixels[3 * i + 2]);
    ASSERT_LE(std::abs(int(g.pixels[3 * i]) - int(gray[i])), 8);
  }

  // Trailing bytes after EOI are ignored (Pillow too).
  auto jpeg = encode_jpeg(rgb, w, h, TJPF_RGB, TJSAMP_420);
  const RgbImage ref = decode(jpeg);
  jpeg.insert(jpeg.end(), {0x00, 0x12, 0x34, 0x56});
  EXPECT_EQ(decode(jpeg).pixels, ref.pixels);
}

// 4-component JPEGs: Pillow treats the stored values as Adobe-inverted CMYK, so with k = 255
// (no black) a stored value s reads back as RGB s.
TEST(ImageDecode, CmykJpegConvertedLikePillow) {
  const int w = 16, h = 16;
  std::vector<uint8_t> cmyk;
  for (int i = 0; i < w * h; ++i) cmyk.insert(cmyk.end(), {200, 100, 50, 255});
  RgbImage im = decode(encode_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_444));
  ASSERT_EQ(im.width, w);
  for (int i = 0; i < w * h; ++i) {
    EXPECT_NEAR(im.pixels[3 * i], 200, 3);
    EXPECT_NEAR(im.pixels[3 * i + 1], 100, 3);
    EXPECT_NEAR(im.pixels[3 * i + 2], 50, 3);
  }
  // Half black: stored k = 128 halves every channel.
  cmyk.clear();
  for (int i = 0; i < w * h; ++i) cmyk.insert(cmyk.end(), {200, 100, 50, 128});
  RgbImage half = decode(encode_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_444));
  EXPECT_NEAR(half.pixels[0], 200 * 128 / 255, 3);
  EXPECT_NEAR(half.pixels[1], 100 * 128 / 255, 3);
}

TEST(ImageDecode, DctScaledDecodeOfLargeJpeg) {
  const int w = 2000, h = 1500;
  const auto jpeg = encode_jpeg(gradient(w, h, 3), w, h, TJPF_RGB, TJSAMP_420, 80);
  RgbImage full = decode(jpeg);
  EXPECT_EQ(full.width, w);
  EXPECT_EQ(full.height, h);
  RgbImage scaled = decode(jpeg, 336);
  EXPECT_GE(std::min(scaled.width, scaled.height), 2 * 336);
  EXPECT_LT(scaled.height, h);  // 1500 * 1/2 = 750 >= 672; 3/8 would give 563
  EXPECT_EQ(scaled.width, 1000);
  EXPECT_EQ(scaled.height, 750);
  EXPECT_EQ(scaled.pixels.size(), size_t{1000} * 750 * 3);
  // Not far larger than the target: no scaling.
  RgbImage near = decode(jpeg, 500);
  EXPECT_EQ(near.width, w);
  // The preprocessed result stays close to the full decode's.
  auto cfg = llava::ImageProcessorConfig::clip_defaults(336);
  auto a = llava::clip_preprocess(full, cfg, false), b = llava::clip_preprocess(scaled, cfg, false);
  double sum = 0;
  for (size_t i = 0; i < a.data.size(); ++i) sum += std::fabs(a.data[i] - b.data[i]);
  EXPECT_LT(sum / a.data.size(), 0.02);
}

TEST(ImageDecode, BadInputsThrow) {
  EXPECT_THROW(llava::decode_image(nullptr, 0), Error);
  const uint8_t one = 0;
  EXPECT_THROW(llava::decode_image(&one, 0), Error);
  EXPECT_THROW(decode(bytes_of("hello, this is not an image at all")), Error);
  EXPECT_THROW(decode(bytes_of("\x89PNG\r\n\x1a\n")), Error);
  EXPECT_THROW(decode(bytes_of(std::string("\xFF\xD8\xFF", 3))), Error);

  std::mt19937 rng(1234);
  for (int n : {1, 2, 7, 64, 1000, 100000}) {
    std::vector<uint8_t> random(n);
    for (auto& b : random) b = static_cast<uint8_t>(rng());
    EXPECT_THROW(decode(random), Error) << n << " random bytes";
  }

  const auto png = encode_png(gradient(40, 30, 3), 40, 30, 3);
  for (size_t cut : {png.size() / 3, png.size() / 2, png.size() - 20}) {
    std::vector<uint8_t> t(png.begin(), png.begin() + cut);
    EXPECT_THROW(decode(t), Error) << "PNG cut at " << cut;
  }
  const auto jpeg = encode_jpeg(gradient(64, 64, 3), 64, 64, TJPF_RGB, TJSAMP_420);
  for (size_t cut : {size_t{100}, jpeg.size() / 2, jpeg.size() - 2}) {
    std::vector<uint8_t> t(jpeg.begin(), jpeg.begin() + cut);
    try {
      decode(t);
      ADD_FAILURE() << "JPEG cut at " << cut << " of " << jpeg.size() << " accepted";
    } catch (const Error& e) {
      std::printf("[ truncated JPEG at %zu ] %s\n", cut, e.what());
    }
  }

  try {
    decode(bytes_of(std::string("RIFF\x10\0\0\0WEBPVP8 ", 16)));
    ADD_FAILURE() << "WebP accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("WebP"), std::string::npos) << e.what();
  }

  try {
    llava::load_image_file("/nonexistent/x.png");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.png"), std::string::npos);
  }
}

// Header dimensions are checked before any pixel buffer is allocated.
TEST(ImageDecode, HugeDimensionsRejected) {
  auto png = encode_png(gradient(4, 4, 3), 4, 4, 3);
  // IHDR data starts at byte 16: width, height big-endian; its CRC (libpng checks it) follows at 29.
  auto set_be32 = [](std::vector<uint8_t>& b, size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
  };
  // Just over PIL's limit (2 * MAX_IMAGE_PIXELS = 178956970 pixels), far over it, over 2^32 pixels.
  for (auto [w, h] : {std::pair{13378u, 13378u}, std::pair{200000u, 1000u}, std::pair{100000u, 100000u}}) {
    set_be32(png, 16, w);
    set_be32(png, 20, h);
    set_be32(png, 29, crc32(&png[12], 17) ^ 0xFFFFFFFFu);
    try {
      decode(png);
      ADD_FAILURE() << "huge PNG accepted";
    } catch (const Error& e) {
      std::printf("[ huge PNG %ux%u ] %s\n", w, h, e.what());
      EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos);
    }
  }

  auto jpeg = encode_jpeg(gradient(8, 8, 3), 8, 8, TJPF_RGB, TJSAMP_444);
  bool patched = false;
  for (size_t i = 2; i + 9 < jpeg.size(); ++i)
    if (jpeg[i] == 0xFF && jpeg[i + 1] == 0xC0) {  // SOF0: len(2) precision(1) height(2) width(2)
      jpeg[i + 5] = 0xEA, jpeg[i + 6] = 0x60, jpeg[i + 7] = 0xEA, jpeg[i + 8] = 0x60;  // 60000 x 60000
      patched = true;
      break;
    }
  ASSERT_TRUE(patched);
  try {
    decode(jpeg);
    ADD_FAILURE() << "huge JPEG accepted";
  } catch (const Error& e) {
    std::printf("[ huge JPEG ] %s\n", e.what());
    EXPECT_NE(std::string(e.what()).find("too large"), std::string::npos);
  }
}

// Mutated valid files: decode or throw llava::Error, never crash (run under ASan to be sure).
TEST(ImageDecode, CorruptedBytesNeverCrash) {
  const auto png = encode_png(gradient(24, 16, 3), 24, 16, 3);
  const auto jpeg = encode_jpeg(gradient(24, 16, 3), 24, 16, TJPF_RGB, TJSAMP_420);
  std::mt19937 rng(42);
  int decoded = 0, rejected = 0;
  for (const auto* base : {&png, &jpeg})
    for (int iter = 0; iter < 300; ++iter) {
      auto b = *base;
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<uint8_t>(rng());
      if (rng() % 4 == 0) b.resize(rng() % b.size() + 1);
      try {
        RgbImage im = decode(b);
        ASSERT_EQ(im.pixels.size(), static_cast<size_t>(im.width) * im.height * 3);
        ++decoded;
      } catch (const Error&) {
        ++rejected;
      }
    }
  std::printf("[ corrupted ] %d decoded, %d rejected\n", decoded, rejected);
}

// ---- geometry and pipeline ----------------------------------------------------------------------

TEST(ImagePreprocess, ExpandToSquareGeometry) {
  const std::array<uint8_t, 3> bg{122, 116, 104};
  // Wide 4x2: pasted at (0, (4-2)/2 = 1).
  RgbImage wide = solid(4, 2, {1, 2, 3});
  RgbImage sq = llava::expand_to_square(wide, bg);
  ASSERT_EQ(sq.width, 4);
  ASSERT_EQ(sq.height, 4);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 4; ++x) {
      const uint8_t* p = &sq.pixels[(y * 4 + x) * 3];
      const bool inside = y == 1 || y == 2;
      EXPECT_EQ(p[0], inside ? 1 : 122) << x << "," << y;
      EXPECT_EQ(p[2], inside ? 3 : 104) << x << "," << y;
    }
  // Tall 2x5: pasted at ((5-2)/2 = 1, 0).
  RgbImage tall = solid(2, 5, {9, 9, 9});
  RgbImage sq2 = llava::expand_to_square(tall, bg);
  ASSERT_EQ(sq2.width, 5);
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 5; ++x) EXPECT_EQ(sq2.pixels[(y * 5 + x) * 3], (x == 1 || x == 2) ? 9 : 122);
  // Square: unchanged.
  RgbImage s = solid(3, 3, {5, 6, 7});
  EXPECT_EQ(llava::expand_to_square(s, bg).pixels, s.pixels);
}

TEST(ImagePreprocess, CenterCropOffsets) {
  RgbImage im;
  im.width = 5;
  im.height = 4;
  for (int i = 0; i < 20; ++i) im.pixels.insert(im.pixels.end(), {uint8_t(10 + i), 0, 0});
  // top = (4-2)/2 = 1, left = (5-2)/2 = 1
  RgbImage c = llava::center_crop(im, 2, 2);
  ASSERT_EQ(c.width, 2);
  ASSERT_EQ(c.height, 2);
  EXPECT_EQ(c.pixels[0], 16);
  EXPECT_EQ(c.pixels[3], 17);
  EXPECT_EQ(c.pixels[6], 21);
  EXPECT_EQ(c.pixels[9], 22);
  // Larger than the image: zero padding, full crop size; left = (5-7)/2 = -1.
  RgbImage big = llava::center_crop(im, 7, 4);
  ASSERT_EQ(big.width, 7);
  ASSERT_EQ(big.height, 4);
  EXPECT_EQ(big.pixels[0 * 3], 0);
  EXPECT_EQ(big.pixels[1 * 3], 10);
  EXPECT_EQ(big.pixels[5 * 3], 14);
  EXPECT_EQ(big.pixels[6 * 3], 0);
}

TEST(ImagePreprocess, ResizeIdentityAndConstant) {
  RgbImage im;
  im.width = 9;
  im.height = 6;
  im.pixels = gradient(9, 6, 3);
  EXPECT_EQ(llava::resize_bicubic(im, 9, 6).pixels, im.pixels);
  // Normalised coefficients keep a constant image constant, up and down, one axis or both.
  RgbImage c = solid(37, 23, {200, 10, 255});
  for (auto [w, h] : {std::pair{11, 7}, std::pair{37, 50}, std::pair{80, 23}, std::pair{5, 5}, std::pair{1, 1}}) {
    RgbImage r = llava::resize_bicubic(c, w, h);
    ASSERT_EQ(r.width, w);
    ASSERT_EQ(r.height, h);
    for (int i = 0; i < w * h; ++i) {
      ASSERT_EQ(r.pixels[3 * i], 200);
      ASSERT_EQ(r.pixels[3 * i + 1], 10);
      ASSERT_EQ(r.pixels[3 * i + 2], 255);
    }
  }
  EXPECT_THROW(llava::resize_bicubic(im, 0, 5), Error);
  // 1x20000 strip to a 336 short side would be 336 x 6.7M pixels.
  const auto clip336 = llava::ImageProcessorConfig::clip_defaults(336);
  EXPECT_THROW(llava::clip_preprocess(solid(1, 20000, {1, 2, 3}), clip336, false), Error);
  RgbImage bad;
  bad.width = 3;
  bad.height = 3;
  EXPECT_THROW(llava::resize_bicubic(bad, 2, 2), Error);
}

// Pillow's 2x bicubic downscale of a 1-D step 0,0,0,0,255,255,255,255: the antialiased kernel
// (support 4) spreads the edge over the middle outputs, symmetrically (clamped at the borders).
TEST(ImagePreprocess, ResizeAntialiasesOnDownscale) {
  RgbImage step;
  step.width = 8;
  step.height = 1;
  for (int x = 0; x < 8; ++x) step.pixels.insert(step.pixels.end(), 3, uint8_t(x < 4 ? 0 : 255));
  RgbImage r = llava::resize_bicubic(step, 4, 1);
  ASSERT_EQ(r.width, 4);
  EXPECT_EQ(r.pixels[0 * 3], 0);
  EXPECT_EQ(r.pixels[3 * 3], 255);
  EXPECT_GT(r.pixels[1 * 3], 0);
  EXPECT_LT(r.pixels[1 * 3], 128);
  EXPECT_NEAR(int(r.pixels[1 * 3]) + int(r.pixels[2 * 3]), 255, 1);  // mirror taps, fixed-point rounding
}

TEST(ImagePreprocess, PipelineShapesAndValues) {
  auto cfg = llava::ImageProcessorConfig::clip_defaults(56);
  RgbImage im;
  im.width = 120;
  im.height = 80;
  im.pixels = gradient(120, 80, 3);
  auto plain = llava::clip_preprocess(im, cfg, false);
  EXPECT_EQ(plain.channels, 3);
  EXPECT_EQ(plain.height, 56);
  EXPECT_EQ(plain.width, 56);
  EXPECT_EQ(plain.data.size(), size_t{3 * 56 * 56});

  auto no_crop = cfg;
  no_crop.do_center_crop = false;
  auto t = llava::clip_preprocess(im, no_crop, false);
  EXPECT_EQ(t.width, 84);  // int(56 * 120 / 80)
  EXPECT_EQ(t.height, 56);
  RgbImage tall;
  tall.width = 70;
  tall.height = 150;
  tall.pixels = gradient(70, 150, 3);
  auto tt = llava::clip_preprocess(tall, no_crop, false);
  EXPECT_EQ(tt.width, 56);
  EXPECT_EQ(tt.height, 120);  // int(56 * 150 / 70) = int(120.0)

  // Pad: a solid image padded with the background is uniform after normalisation where the
  // background shows; value = (float32(122/255) - mean) / std.
  auto pad = llava::clip_preprocess(solid(120, 40, {122, 116, 104}), cfg, true);
  const float expected_r = (float(122 * (1.0 / 255.0)) - cfg.mean[0]) / cfg.std[0];
  EXPECT_EQ(pad.height, 56);
  for (int i = 0; i < 56 * 56; ++i) ASSERT_EQ(pad.data[i], expected_r);

  // CHW layout and the exact float32 formula.
  RgbImage px = solid(56, 56, {0, 128, 255});
  auto v = llava::clip_preprocess(px, cfg, false);
  for (int c = 0; c < 3; ++c) {
    const int u8 = c == 0 ? 0 : c == 1 ? 128 : 255;
    const float want = (static_cast<float>(u8 * cfg.rescale_factor) - cfg.mean[c]) / cfg.std[c];
    EXPECT_EQ(v.data[c * 56 * 56 + 100], want);
  }
  EXPECT_THROW(llava::clip_preprocess(RgbImage{}, cfg, false), Error);
}

// ---- the fused, vectorised resize against a plain Pillow port ------------------------------------

// Pillow's Resample.c (precompute_coeffs, normalize_coeffs_8bpc, ImagingResample{Horizontal,Vertical}_8bpc)
// written out one output pixel at a time over the whole image, as the reference the optimised path
// (crop-restricted passes, transposed blocks, fixed tap counts, expand2square without a canvas) must
// match bit for bit.
namespace pillow {

struct Coeffs {
  int ksize = 0;
  std::vector<int> xmin, count;
  std::vector<int> k;  // out x ksize fixed-point weights
};

Coeffs precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = 2.0 * filterscale;  // bicubic support 2
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale, ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    std::vector<double> w(c.ksize, 0.0);
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      double t = std::fabs((x + xmin - center + 0.5) * ss);  // bicubic, a = -0.5
      const double a = -0.5;
      w[x] = t < 1.0 ? ((a + 2.0) * t - (a + 3.0)) * t * t + 1 : t < 2.0 ? (((t - 5) * t + 8) * t - 4) * a : 0.0;
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) w[x] /= ww;
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          w[x] < 0 ? static_cast<int>(-0.5 + w[x] * (1 << 22)) : static_cast<int>(0.5 + w[x] * (1 << 22));
    }
    c.xmin[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

uint8_t clip8(int in) {
  if (in >= (1 << 22 << 8)) return 255;
  if (in <= 0) return 0;
  return static_cast<uint8_t>(in >> 22);
}

RgbImage resize(const RgbImage& im, int width, int height) {
  if (width == im.width && height == im.height) return im;
  RgbImage cur = im;
  if (width != cur.width) {
    const Coeffs c = precompute(cur.width, width);
    RgbImage out;
    out.width = width;
    out.height = cur.height;
    out.pixels.resize(static_cast<size_t>(width) * cur.height * 3);
    for (int y = 0; y < cur.height; ++y)
      for (int xx = 0; xx < width; ++xx)
        for (int ch = 0; ch < 3; ++ch) {
          int ss = 1 << 21;
          for (int x = 0; x < c.count[xx]; ++x)
            ss += cur.pixels[(static_cast<size_t>(y) * cur.width + x + c.xmin[xx]) * 3 + ch] *
                  c.k[static_cast<size_t>(xx) * c.ksize + x];
          out.pixels[(static_cast<size_t>(y) * width + xx) * 3 + ch] = clip8(ss);
        }
    cur = std::move(out);
  }
  if (height != cur.height) {
    const Coeffs c = precompute(cur.height, height);
    RgbImage out;
    out.width = cur.width;
    out.height = height;
    out.pixels.resize(static_cast<size_t>(cur.width) * height * 3);
    for (int yy = 0; yy < height; ++yy)
      for (int x = 0; x < cur.width; ++x)
        for (int ch = 0; ch < 3; ++ch) {
          int ss = 1 << 21;
          for (int y = 0; y < c.count[yy]; ++y)
            ss += cur.pixels[(static_cast<size_t>(y + c.xmin[yy]) * cur.width + x) * 3 + ch] *
                  c.k[static_cast<size_t>(yy) * c.ksize + y];
          out.pixels[(static_cast<size_t>(yy) * cur.width + x) * 3 + ch] = clip8(ss);
        }
    cur = std::move(out);
  }
  return cur;
}

// The pipeline one step at a time, each step materialised: expand2square, resize, crop, then the
// README's float32 formula per value.
llava::PixelTensor preprocess(const RgbImage& im, const llava::ImageProcessorConfig& cfg, bool pad) {
  RgbImage cur = pad ? llava::expand_to_square(im, cfg.pad_background()) : im;
  if (cfg.do_resize) {
    const int s = std::min(cur.width, cur.height), l = std::max(cur.width, cur.height);
    const int nl = static_cast<int>(static_cast<double>(static_cast<long long>(cfg.shortest_edge) * l) / s);
    const bool portrait = cur.width <= cur.height;
    cur = resize(cur, portrait ? cfg.shortest_edge : nl, portrait ? nl : cfg.shortest_edge);
  }
  if (cfg.do_center_crop) cur = llava::center_crop(cur, cfg.crop_width, cfg.crop_height);
  llava::PixelTensor t;
  t.height = cur.height;
  t.width = cur.width;
  const size_t plane = static_cast<size_t>(t.height) * t.width;
  t.data.resize(3 * plane);
  for (size_t i = 0; i < plane; ++i)
    for (int c = 0; c < 3; ++c) {
      const int v = cur.pixels[3 * i + c];
      float x = cfg.do_rescale ? static_cast<float>(v * cfg.rescale_factor) : static_cast<float>(v);
      if (cfg.do_normalize) x = (x - cfg.mean[c]) / cfg.std[c];
      t.data[c * plane + i] = x;
    }
  return t;
}

}  // namespace pillow

RgbImage noise(int w, int h, std::mt19937& rng) {
  RgbImage im;
  im.width = w;
  im.height = h;
  im.pixels.resize(static_cast<size_t>(w) * h * 3);
  // Mostly smooth with hard edges and noise, so sums land on both sides of the rounding points and
  // overshoot past 0 and 255 (the clamps).
  std::uniform_int_distribution<int> u(0, 255), coin(0, 7);
  const int bx = u(rng) % w, by = u(rng) % h;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        int v = (x < bx) != (y < by) ? 250 : 5;
        if (coin(rng) == 0) v = u(rng);
        im.pixels[(static_cast<size_t>(y) * w + x) * 3 + c] = static_cast<uint8_t>(v);
      }
  return im;
}

TEST(ImageResizeExact, ResizeMatchesPillowPort) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> side(1, 90);
  const std::vector<std::array<int, 4>> fixed = {
      {640, 480, 448, 336}, {480, 640, 336, 448}, {37, 23, 336, 209},  // the real case; an upscale
      {1, 1, 5, 3},         {3, 2, 40, 41},       {7, 9, 7, 4},        // tiny (fewer pixels than taps), one axis
      {9, 7, 4, 7},         {100, 3, 13, 1},      {2000, 40, 336, 7}};  // strong downscale (many taps)
  std::vector<std::array<int, 4>> cases = fixed;
  for (int i = 0; i < 40; ++i) cases.push_back({side(rng), side(rng), side(rng), side(rng)});
  for (const auto& [w, h, ow, oh] : cases) {
    const RgbImage im = noise(w, h, rng);
    const RgbImage got = llava::resize_bicubic(im, ow, oh), want = pillow::resize(im, ow, oh);
    ASSERT_EQ(got.width, ow);
    ASSERT_EQ(got.height, oh);
    ASSERT_EQ(got.pixels, want.pixels) << w << "x" << h << " -> " << ow << "x" << oh;
  }
}

TEST(ImageResizeExact, PreprocessMatchesStepByStepPipeline) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> side(1, 120), edge(1, 64), coin(0, 1), third(0, 2);
  struct Case {
    int w, h, edge, crop_w, crop_h;
    bool pad, crop = true, resize = true;
  };
  std::vector<Case> cases = {
      {640, 480, 336, 336, 336, false}, {640, 480, 336, 336, 336, true},  // the benchmark's cases
      {480, 640, 336, 336, 336, false}, {479, 641, 336, 336, 336, true},  // portrait, odd sizes
      {333, 517, 224, 224, 224, false}, {517, 333, 224, 224, 224, true},
      {101, 37, 56, 55, 57, false},     {37, 101, 56, 57, 55, true},      // crops off even pixels
      {20, 30, 16, 40, 10, false},      {30, 20, 16, 10, 40, true},       // crops larger than the image
      {50, 20, 50, 50, 50, true},       {30, 30, 30, 17, 19, false},      // pad, then no resize
  };
  cases.push_back({60, 25, 0, 0, 0, true, true, false});   // pad without a resize
  cases.back().crop_w = 33, cases.back().crop_h = 70;
  cases.push_back({45, 31, 20, 0, 0, false, false, true});  // no crop
  cases.push_back({31, 45, 20, 0, 0, true, false, true});
  for (int i = 0; i < 60; ++i) {
    Case c{side(rng), side(rng), edge(rng), edge(rng), edge(rng), coin(rng) == 1};
    c.crop = third(rng) != 0;
    cases.push_back(c);
  }
  for (const Case& c : cases) {
    auto cfg = llava::ImageProcessorConfig::clip_defaults(c.resize ? c.edge : 1);
    cfg.do_resize = c.resize;
    cfg.do_center_crop = c.crop;
    cfg.crop_width = c.crop_w;
    cfg.crop_height = c.crop_h;
    const RgbImage im = noise(c.w, c.h, rng);
    const auto got = llava::clip_preprocess(im, cfg, c.pad), want = pillow::preprocess(im, cfg, c.pad);
    const std::string what = std::to_string(c.w) + "x" + std::to_string(c.h) + " edge " + std::to_string(c.edge) +
                             " crop " + std::to_string(c.crop_w) + "x" + std::to_string(c.crop_h) +
                             (c.pad ? " pad" : "") + (c.crop ? "" : " no-crop") + (c.resize ? "" : " no-resize");
    ASSERT_EQ(got.channels, 3) << what;
    ASSERT_EQ(got.height, want.height) << what;
    ASSERT_EQ(got.width, want.width) << what;
    ASSERT_EQ(got.data.size(), want.data.size()) << what;
    // Bit for bit (memcmp, so -0.0f vs 0.0f would count too).
    ASSERT_EQ(std::memcmp(got.data.data(), want.data.data(), got.data.size() * sizeof(float)), 0) << what;
  }
}

}  // namespace
