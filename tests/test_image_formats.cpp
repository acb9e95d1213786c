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
#include <fstream>
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

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
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
    ASSERT_TRUE(got_error.empty()) << got_error;
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
