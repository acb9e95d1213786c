// Image formats and modes as PIL 9.4 (LLaVA's Image.open(f).convert('RGB')) decodes them, and files that
// are not images. Against PIL: tests/pil_reference.py writes images of every mode at test time and PIL's
// decode + CLIP preprocessing of each (skipped, with the reason, without /usr/bin/python3 + PIL + numpy).
// C++-only: lossless round trips through each format's own encoder, bad files, decompression bombs.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>

#include "image_test_support.h"
#include "llava/error.h"
#include "llava/example.h"
#include "llava/image.h"
#include "test_support.h"

namespace {

using llava::Error;
using llava::RgbImage;
using namespace llava::testing;

const char* const kPython = "/usr/bin/python3";

bool python_has_pil() {
  return std::system((std::string(kPython) + " -c 'import PIL, numpy' >/dev/null 2>&1").c_str()) == 0;
}

void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Inputs PIL cannot write, made by the C++ encoders before the script runs: YCCK JPEG (TurboJPEG
// compresses CMYK as YCCK), 4:4:0 and 4:1:1 subsampling, a JPEG with restart markers is not needed.
void write_cpp_inputs(const std::string& dir) {
  const int w = 45, h = 29;
  std::vector<uint8_t> cmyk = test_pixels(w, h, 4, 3);
  write_file(dir + "/jpeg_ycck_turbojpeg.bin", encode_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_420, 90));
  write_file(dir + "/jpeg_ycck_444_turbojpeg.bin", encode_jpeg(cmyk, w, h, TJPF_CMYK, TJSAMP_444, 95));
  const std::vector<uint8_t> rgb = test_pixels(w, h, 3, 4);
  write_file(dir + "/jpeg_440_turbojpeg.bin", encode_jpeg(rgb, w, h, TJPF_RGB, TJSAMP_440, 90));
  write_file(dir + "/jpeg_411_turbojpeg.bin", encode_jpeg(rgb, w, h, TJPF_RGB, TJSAMP_411, 90));
}

double max_abs_diff(const float* a, const float* b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

}  // namespace

// Every mode PIL opens: RGB/RGBA/L/LA/1/P (with and without tRNS, short palettes), 16-bit PNG and TIFF,
// CMYK and YCCK JPEG, EXIF orientation, GIF/WebP first frames, TIFF compressions / planes / tiles /
// orientation, BMP. Decoded RGB must equal PIL's byte for byte, and both preprocessing modes its float32
// values bit for bit (PIL's decode feeds the same CLIPImageProcessor steps).
TEST(ImagePil, EveryModeDecodesAsPil) {
  if (!python_has_pil())
    GTEST_SKIP() << kPython << " with PIL and numpy not found (apt-get install python3-pil python3-numpy): "
                 << "PIL comparisons skipped";
  const std::string dir = temp_dir("image_pil");
  const int edge = 32;
  write_cpp_inputs(dir);
  const std::string cmd = std::string(kPython) + " " + LLAVA_SOURCE_DIR + "/tests/pil_reference.py " + dir + " " +
                          std::to_string(edge) + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const auto manifest = nlohmann::json::parse(read_file(dir + "/manifest.json"));
  std::printf("[ pil ] Pillow %s, %zu files\n", manifest["pillow"].get<std::string>().c_str(), manifest["cases"].size());
  const auto cfg = llava::ImageProcessorConfig::clip_defaults(edge);
  int compared = 0;
  for (const auto& c : manifest["cases"]) {
    const std::string file = c["file"];
    SCOPED_TRACE(file);
    const std::string got_error = error_of([&] { llava::load_image_file(dir + "/" + file); });
    if (!c["ok"].get<bool>()) {  // PIL refuses it: so must we
      std::printf("[ pil ] %-36s PIL: %s | ours: %s\n", file.c_str(), c["error"].get<std::string>().c_str(),
                  got_error.c_str());
      EXPECT_FALSE(got_error.empty()) << "PIL refuses this file, we decoded it";
      continue;
    }
    if (!got_error.empty()) {
      ADD_FAILURE() << "PIL decodes this file, we do not: " << got_error;
      continue;
    }
    const RgbImage im = llava::load_image_file(dir + "/" + file);  // by content: extensions are misleading
    const std::vector<uint8_t> want = read_bytes(dir + "/ref/" + file + ".rgb");
    if (im.width != c["width"].get<int>() || im.height != c["height"].get<int>() || want.size() != im.pixels.size()) {
      ADD_FAILURE() << "size " << im.width << "x" << im.height << ", PIL " << c["width"] << "x" << c["height"];
      continue;
    }
    size_t wrong = 0;
    int worst = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      wrong += want[i] != im.pixels[i];
      worst = std::max(worst, std::abs(int(want[i]) - int(im.pixels[i])));
    }
    double diffs[2];
    for (bool pad : {false, true}) {
      const llava::PixelTensor t = llava::clip_preprocess(im, cfg, pad);
      const std::vector<uint8_t> ref = read_bytes(dir + "/ref/" + file + (pad ? ".pad" : ".square"));
      ASSERT_EQ(ref.size(), t.data.size() * sizeof(float));
      diffs[pad] = max_abs_diff(t.data.data(), reinterpret_cast<const float*>(ref.data()), t.data.size());
      EXPECT_EQ(std::memcmp(ref.data(), t.data.data(), ref.size()), 0) << (pad ? "pad" : "square");
    }
    std::printf("[ pil ] %-36s %-5s %3dx%-3d rgb: %zu of %zu values differ (max %d); square max |diff| %g, pad %g\n",
                file.c_str(), c["mode"].get<std::string>().c_str(), im.width, im.height, wrong, want.size(), worst,
                diffs[0], diffs[1]);
    EXPECT_EQ(wrong, 0u);
    ++compared;
  }
  EXPECT_GE(compared, 100);
}

// ---- C++-only: each format's own encoder, then our decoder --------------------------------------------

// Lossless WebP (exact mode keeps colour under alpha 0): the RGB bytes come back, alpha dropped.
TEST(ImageFormats, WebpLosslessRoundTripDropsAlpha) {
  const int w = 23, h = 17;
  std::vector<uint8_t> rgba = test_pixels(w, h, 4, 1);
  for (size_t i = 3; i < rgba.size(); i += 8) rgba[i] = 0;
  const std::vector<uint8_t> webp = encode_webp(rgba, w, h, 4, true);
  const RgbImage im = llava::decode_image(webp.data(), webp.size());
  ASSERT_EQ(im.width, w);
  ASSERT_EQ(im.height, h);
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(im.pixels[3 * i + c], rgba[4 * i + c]) << i;
  // Lossy: right size, values near the (smooth) input.
  std::vector<uint8_t> rgb(64 * 48 * 3);
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x)
      for (int c = 0; c < 3; ++c) rgb[(y * 64 + x) * 3 + c] = static_cast<uint8_t>(std::min(x * 2 + y * 2 + c * 20, 255));
  const std::vector<uint8_t> lossy = encode_webp(rgb, 64, 48, 3, false);
  const RgbImage l = llava::decode_image(lossy.data(), lossy.size());
  ASSERT_EQ(l.pixels.size(), rgb.size());
  double sum = 0;
  for (size_t i = 0; i < rgb.size(); ++i) sum += std::abs(int(l.pixels[i]) - int(rgb[i]));
  std::printf("[ webp ] lossy 64x48: mean |diff| %.2f levels\n", sum / rgb.size());
  EXPECT_LT(sum / rgb.size(), 4.0);
}

// GIF: indices through the colour table; the transparent index keeps its table colour (PIL's
// convert('RGB') ignores transparency); an index past a short table reads PIL's grey ramp.
TEST(ImageFormats, GifPaletteAndTransparentIndex) {
  const int w = 9, h = 7;
  const std::vector<uint8_t> palette = {10, 20, 30, 200, 0, 0, 0, 200, 0, 7, 8, 9};
  std::vector<uint8_t> idx(w * h);
  for (int i = 0; i < w * h; ++i) idx[i] = static_cast<uint8_t>(i % 4);
  const std::vector<uint8_t> gif = encode_gif(idx, w, h, palette, /*transparent=*/1);
  const RgbImage im = llava::decode_image(gif.data(), gif.size());
  ASSERT_EQ(im.width, w);
  ASSERT_EQ(im.height, h);
  for (int i = 0; i < w * h; ++i)
    for (int c = 0; c < 3; ++c) ASSERT_EQ(im.pixels[3 * i + c], palette[3 * idx[i] + c]) << i;
}

namespace {

std::vector<std::vector<uint8_t>> rows_of(const std::vector<uint8_t>& px, int w, int h, int bytes_per_pixel) {
  std::vector<std::vector<uint8_t>> rows;
  for (int y = 0; y < h; ++y)
    rows.emplace_back(px.begin() + static_cast<size_t>(y) * w * bytes_per_pixel,
                      px.begin() + static_cast<size_t>(y + 1) * w * bytes_per_pixel);
  return rows;
}

// PIL's cmyk2rgb for one channel (Convert.c): CLIP8(nk - MULDIV255(c, nk)), nk = 255 - k.
int pil_cmyk(int c, int k) {
  const int nk = 255 - k, t = c * nk + 128;
  return std::clamp(nk - (((t >> 8) + t) >> 8), 0, 255);
}

}  // namespace

// TIFFs written by libtiff: RGB (LZW), 16-bit grey (clipped to 255 as PIL's I;16 -> RGB), palette (the
// colour map's high bytes), CMYK (PIL's formula), associated alpha (un-premultiplied: c * 255 / a),
// Orientation 6 (PIL rotates: the decoded image is h x w).
TEST(ImageFormats, TiffLayoutsFromLibtiff) {
  const int w = 13, h = 11;
  const std::vector<uint8_t> rgb = test_pixels(w, h, 3, 5);
  auto rgb_tags = [](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_LZW);
  };
  const auto lzw = encode_tiff(w, h, rows_of(rgb, w, h, 3), rgb_tags, 4);
  EXPECT_EQ(llava::decode_image(lzw.data(), lzw.size()).pixels, rgb);

  std::vector<uint8_t> grey16(w * h * 2);
  for (int i = 0; i < w * h; ++i) {
    const uint16_t v = static_cast<uint16_t>(i * 97);  // 0 .. 13871: mostly above 255
    std::memcpy(&grey16[2 * i], &v, 2);                 // libtiff writes native order
  }
  const auto g16 = encode_tiff(w, h, rows_of(grey16, w, h, 2), [](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 16);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_ADOBE_DEFLATE);
  });
  const RgbImage g = llava::decode_image(g16.data(), g16.size());
  for (int i = 0; i < w * h; ++i) ASSERT_EQ(g.pixels[3 * i + 1], std::min(i * 97, 255)) << i;

  std::vector<uint16_t> red(256), green(256), blue(256);
  for (int i = 0; i < 256; ++i) red[i] = uint16_t(i * 257), green[i] = uint16_t(65535 - i * 100), blue[i] = uint16_t(i * 7 + 0x80);
  std::vector<uint8_t> idx(w * h);
  for (int i = 0; i < w * h; ++i) idx[i] = static_cast<uint8_t>(i * 5);
  const auto pal = encode_tiff(w, h, rows_of(idx, w, h, 1), [&](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_PALETTE);
    TIFFSetField(t, TIFFTAG_COLORMAP, red.data(), green.data(), blue.data());
  });
  const RgbImage p = llava::decode_image(pal.data(), pal.size());
  for (int i = 0; i < w * h; ++i) {
    ASSERT_EQ(p.pixels[3 * i], red[idx[i]] >> 8);
    ASSERT_EQ(p.pixels[3 * i + 1], green[idx[i]] >> 8);
    ASSERT_EQ(p.pixels[3 * i + 2], blue[idx[i]] >> 8);
  }

  const std::vector<uint8_t> cmyk = test_pixels(w, h, 4, 6);
  const auto cm = encode_tiff(w, h, rows_of(cmyk, w, h, 4), [](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 4);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_SEPARATED);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
  });
  const RgbImage c = llava::decode_image(cm.data(), cm.size());
  for (int i = 0; i < w * h; ++i)
    for (int ch = 0; ch < 3; ++ch) ASSERT_EQ(c.pixels[3 * i + ch], pil_cmyk(cmyk[4 * i + ch], cmyk[4 * i + 3])) << i;

  std::vector<uint8_t> premul = test_pixels(w, h, 4, 7);
  for (int i = 0; i < w * h; ++i) {
    premul[4 * i + 3] = static_cast<uint8_t>(i % 3 == 0 ? 0 : i % 3 == 1 ? 255 : 100);
    for (int ch = 0; ch < 3; ++ch) premul[4 * i + ch] = static_cast<uint8_t>(premul[4 * i + ch] * premul[4 * i + 3] / 255);
  }
  const auto pm = encode_tiff(w, h, rows_of(premul, w, h, 4), [](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 4);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    const uint16_t extra = EXTRASAMPLE_ASSOCALPHA;
    TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, &extra);
  });
  const RgbImage a = llava::decode_image(pm.data(), pm.size());
  for (int i = 0; i < w * h; ++i)
    for (int ch = 0; ch < 3; ++ch) {
      const int alpha = premul[4 * i + 3], v = premul[4 * i + ch];
      ASSERT_EQ(a.pixels[3 * i + ch], alpha == 0 ? 0 : alpha == 255 ? v : std::min(v * 255 / alpha, 255)) << i;
    }

  const auto rot = encode_tiff(w, h, rows_of(rgb, w, h, 3), [&](TIFF* t) {
    rgb_tags(t);
    TIFFSetField(t, TIFFTAG_ORIENTATION, ORIENTATION_RIGHTTOP);  // 6: PIL's ROTATE_270 (90 degrees clockwise)
  });
  const RgbImage r = llava::decode_image(rot.data(), rot.size());
  ASSERT_EQ(r.width, h);
  ASSERT_EQ(r.height, w);
  for (int y = 0; y < r.height; ++y)
    for (int x = 0; x < r.width; ++x)  // output (x, y) = input (y, h - 1 - x)
      ASSERT_EQ(std::memcmp(&r.pixels[(y * r.width + x) * 3], &rgb[((h - 1 - x) * w + y) * 3], 3), 0) << x << "," << y;

  // A layout PIL cannot convert to RGB: 32-bit float samples.
  std::vector<uint8_t> floats(w * h * 4, 0);
  const auto f = encode_tiff(w, h, rows_of(floats, w, h, 4), [](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 32);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 1);
    TIFFSetField(t, TIFFTAG_SAMPLEFORMAT, SAMPLEFORMAT_IEEEFP);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_MINISBLACK);
  });
  const std::string err = error_of([&] { llava::decode_image(f.data(), f.size()); });
  std::printf("[ tiff float ] %s\n", err.c_str());
  EXPECT_NE(err.find("unsupported TIFF layout"), std::string::npos) << err;
}

// ---- files that are not decodable images: each an llava::Error saying what and why ---------------------

namespace {

std::vector<uint8_t> png_bytes() {
  std::vector<uint8_t> px = test_pixels(20, 12, 3);
  std::vector<uint8_t> out;
  stbi_write_png_to_func([](void* ctx, void* data, int size) {
        auto* o = static_cast<std::vector<uint8_t>*>(ctx);
        o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      }, &out, 20, 12, 3, px.data(), 20 * 3);
  return out;
}

// One small valid file per decoder.
std::vector<std::pair<std::string, std::vector<uint8_t>>> one_file_per_format() {
  const int w = 30, h = 20;
  const std::vector<uint8_t> rgb = test_pixels(w, h, 3, 8);
  std::vector<uint8_t> idx(w * h);
  for (int i = 0; i < w * h; ++i) idx[i] = static_cast<uint8_t>(i % 16);
  std::vector<uint8_t> palette(16 * 3);
  for (size_t i = 0; i < palette.size(); ++i) palette[i] = static_cast<uint8_t>(i * 5);
  const auto tiff = encode_tiff(w, h, rows_of(rgb, w, h, 3), [](TIFF* t) {
    TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, 8);
    TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, 3);
    TIFFSetField(t, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB);
    TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
    TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_LZW);
  });
  return {{"JPEG", encode_jpeg(rgb, w, h, TJPF_RGB, TJSAMP_420)}, {"PNG", png_bytes()},
          {"GIF", encode_gif(idx, w, h, palette)},         {"WebP", encode_webp(rgb, w, h, 3, true)},
          {"TIFF", tiff},                                  {"BMP", encode_bmp(rgb, w, h, 3)}};
}

bool printable_ascii(const std::string& s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) return false;
  return true;
}

}  // namespace

TEST(ImageFiles, FoldersFifosDevicesEmptyAndMissingFilesAreClearErrors) {
  const std::string dir = temp_dir("image_files");
  const std::string folder = dir + "/folder", fifo = dir + "/fifo", empty = dir + "/empty.png", good = dir + "/good.jpg";
  std::filesystem::create_directories(folder);
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  write_file(empty, {});
  write_file(good, png_bytes());  // a PNG named .jpg: the content decides
  std::filesystem::create_symlink(good, dir + "/link.png");
  ::alarm(30);  // a FIFO opened for a blocking read would hang here for ever: die loudly instead
  const std::vector<std::pair<std::string, std::string>> cases = {
      {folder, "is a directory"},      {fifo, "is a FIFO"},
      {"/dev/null", "is a character device"}, {empty, "is empty (0 bytes)"},
      {dir + "/missing.png", "No such file or directory"}, {".", "is a directory"}};
  for (const auto& [path, reason] : cases) {
    const std::string e = error_of([&] { llava::load_image_file(path); });
    std::printf("[ file ] %s\n", e.c_str());
    EXPECT_NE(e.find("'" + path + "'"), std::string::npos) << e;
    EXPECT_NE(e.find(reason), std::string::npos) << e;
  }
  ::alarm(0);
  EXPECT_EQ(llava::load_image_file(good).width, 20);
  EXPECT_EQ(llava::load_image_file(dir + "/link.png").height, 12);

  // Through the data loader's reader: the sample and the field are named too.
  llava::ImageRef ref{llava::ImageRef::Kind::kPath, folder, "image[1]", {}};
  const std::string e = error_of([&] { llava::read_image_bytes(ref, "sample 3 (id 's3')"); });
  EXPECT_EQ(e, "sample 3 (id 's3'): image[1]: image file '" + folder + "' is a directory, not an image file");
  ref = {llava::ImageRef::Kind::kPath, dir + "/aGVsbG8=", "images[0]", {}};
  EXPECT_NE(error_of([&] { llava::read_image_bytes(ref, "sample 4 (id 's4')"); }).find("neither base64 image data"),
            std::string::npos);
}

TEST(ImageFiles, UnreadableFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: chmod 000 does not stop root from reading the file";
  const std::string path = temp_dir("image_unreadable") + "/locked.png";
  write_file(path, png_bytes());
  ::chmod(path.c_str(), 0);
  const std::string e = error_of([&] { llava::load_image_file(path); });
  std::printf("[ file ] %s\n", e.c_str());
  EXPECT_NE(e.find("Permission denied"), std::string::npos) << e;
}

// Cut-off files of every format fail with the format and why; messages never echo input bytes.
TEST(ImageFiles, TruncatedFilesOfEveryFormat) {
  for (const auto& [format, bytes] : one_file_per_format()) {
    ASSERT_FALSE(bytes.empty()) << format;
    EXPECT_NO_THROW(llava::decode_image(bytes.data(), bytes.size())) << format;
    for (double keep : {0.3, 0.5, 0.8}) {
      const size_t n = static_cast<size_t>(bytes.size() * keep);
      const std::string e = error_of([&, &bytes = bytes] { llava::decode_image(bytes.data(), n); });
      std::printf("[ truncated %-4s at %4zu of %4zu ] %s\n", format.c_str(), n, bytes.size(), e.c_str());
      EXPECT_FALSE(e.empty()) << format << " cut at " << n << " decoded";
      EXPECT_TRUE(printable_ascii(e)) << e;
      EXPECT_NE(e.find(format), std::string::npos) << e;
    }
  }
}

// Declared sizes past PIL's bomb limit fail from the header, before any pixel buffer exists.
TEST(ImageFiles, DecompressionBombsOfEveryFormat) {
  auto files = one_file_per_format();
  auto le16 = [](std::vector<uint8_t>& b, size_t at, uint32_t v) { b[at] = uint8_t(v), b[at + 1] = uint8_t(v >> 8); };
  for (auto& [format, b] : files) {
    if (format == "GIF") le16(b, 6, 30000), le16(b, 8, 30000);  // logical screen
    if (format == "WebP") {  // VP8L header after "VP8L" + size: 0x2f, 14 bits width-1, 14 bits height-1
      ASSERT_EQ(std::string(b.begin() + 12, b.begin() + 16), "VP8L");
      b[21] = b[22] = b[23] = 0xFF, b[24] |= 0x0F;  // 16384 x 16384
    }
    if (format == "BMP") le16(b, 18, 20000), le16(b, 22, 20000);  // BITMAPINFOHEADER width, height
    if (format == "TIFF") {  // ImageWidth / ImageLength entries of the first IFD
      const uint32_t ifd = b[4] | b[5] << 8 | b[6] << 16 | uint32_t(b[7]) << 24;
      const int entries = b[ifd] | b[ifd + 1] << 8;
      for (int k = 0; k < entries; ++k) {
        const size_t at = ifd + 2 + 12 * k;
        const int tag = b[at] | b[at + 1] << 8;
        if (tag == 256 || tag == 257) le16(b, at + 8, 60000), le16(b, at + 10, 0);
      }
    }
    if (format == "JPEG" || format == "PNG") continue;  // tests/test_image.cpp: HugeDimensionsRejected
    const std::string e = error_of([&, &b = b] { llava::decode_image(b.data(), b.size()); });
    std::printf("[ bomb %-4s ] %s\n", format.c_str(), e.c_str());
    EXPECT_NE(e.find("too large"), std::string::npos) << e;
    EXPECT_NE(e.find("178956970"), std::string::npos) << e;
  }
}
