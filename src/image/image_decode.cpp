// Image bytes -> RGB uint8, matching PIL's Image.open(...).convert("RGB") as LLaVA uses it.
// JPEG goes through TurboJPEG (the same libjpeg-turbo Pillow links, default ISLOW IDCT and fancy
// upsampling, so decodes agree to within rounding); everything else through stb_image.
#include <stb_image.h>
#include <turbojpeg.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>

#include "llava/error.h"
#include "llava/image.h"

namespace llava {
namespace {

using namespace std::string_view_literals;

// Decompression-bomb guards, checked from the header before any pixel buffer is allocated.
constexpr long long kMaxSide = 16384;
constexpr long long kMaxPixels = 100LL * 1000 * 1000;

void check_dimensions(long long width, long long height, const char* what) {
  if (width <= 0 || height <= 0)
    throw Error(std::string("invalid ") + what + " dimensions " + std::to_string(width) + "x" +
                std::to_string(height));
  if (width > kMaxSide || height > kMaxSide || width * height > kMaxPixels)
    throw Error(std::string(what) + " too large: " + std::to_string(width) + "x" + std::to_string(height) +
                " (limits: " + std::to_string(kMaxSide) + " per side, " + std::to_string(kMaxPixels) + " pixels)");
}

bool starts_with(const uint8_t* data, size_t size, size_t offset, std::string_view magic) {
  return size >= offset + magic.size() && std::memcmp(data + offset, magic.data(), magic.size()) == 0;
}

bool is_jpeg(const uint8_t* data, size_t size) {
  return size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

// Formats PIL may open but neither decoder here handles: say so instead of "not an image".
const char* unsupported_format(const uint8_t* data, size_t size) {
  if (starts_with(data, size, 0, "RIFF") && starts_with(data, size, 8, "WEBP")) return "WebP";
  if (starts_with(data, size, 0, "II*\0"sv) || starts_with(data, size, 0, "MM\0*"sv)) return "TIFF";
  if (starts_with(data, size, 4, "ftypavif")) return "AVIF";
  if (starts_with(data, size, 4, "ftyphei") || starts_with(data, size, 4, "ftypmif1")) return "HEIF";
  return nullptr;
}

// libjpeg's memory source answers running out of data with a warning and a fake EOI, so a cut-off
// file "decodes" with grey rows. Pillow raises "image file is truncated" there; so do we. Inside
// entropy-coded data 0xFF is always stuffed, so a real EOI must follow the last SOS marker.
bool jpeg_is_truncated(const uint8_t* data, size_t size) {
  size_t last_sos = 0;
  bool has_sos = false;
  for (size_t i = 0; i + 1 < size; ++i)
    if (data[i] == 0xFF && data[i + 1] == 0xDA) last_sos = i, has_sos = true;
  if (!has_sos) return true;
  for (size_t i = last_sos + 2; i + 1 < size; ++i)
    if (data[i] == 0xFF && data[i + 1] == 0xD9) return false;
  return true;
}

struct TjHandle {
  tjhandle h = tjInitDecompress();
  ~TjHandle() {
    if (h) tjDestroy(h);
  }
};

std::string tj_error(tjhandle h) { return tjGetErrorStr2(h); }

// DCT-domain downscale (libjpeg decodes at num/denom size almost for free): the smallest factor
// <= 1/2 that keeps the shorter side >= 2 * min_short_side, so the later antialiased resize still
// has at least 2x to average over.
tjscalingfactor choose_scaling(int width, int height, int min_short_side) {
  tjscalingfactor best{1, 1};
  if (min_short_side <= 0) return best;
  int count = 0;
  const tjscalingfactor* factors = tjGetScalingFactors(&count);
  if (!factors) return best;
  const long long needed = 2LL * min_short_side;
  long long best_short = std::min(width, height);
  for (int i = 0; i < count; ++i) {
    const tjscalingfactor f = factors[i];
    if (f.num * 2 > f.denom) continue;
    const long long s = std::min(TJSCALED(width, f), TJSCALED(height, f));
    if (s >= needed && s < best_short) best = f, best_short = s;
  }
  return best;
}

RgbImage decode_with_stb(const uint8_t* data, size_t size);

// TurboJPEG 2.x refuses a few files that libjpeg (and so Pillow) decodes: unusual sampling factors,
// colour spaces it cannot map to RGB. stb_image's own JPEG decoder handles most of those.
bool stb_can_retry(const std::string& reason) {
  return reason.find("Could not determine") != std::string::npos ||
         reason.find("Unsupported color conversion") != std::string::npos;
}

RgbImage decode_jpeg(const uint8_t* data, size_t size, int min_short_side) {
  TjHandle tj;
  if (!tj.h) throw Error("cannot initialise TurboJPEG: " + std::string(tjGetErrorStr2(nullptr)));
  auto retry_or_fail = [&](const std::string& reason) -> RgbImage {
    if (stb_can_retry(reason) && !jpeg_is_truncated(data, size)) {
      try {
        return decode_with_stb(data, size);
      } catch (const Error&) {
      }
    }
    if (reason.find("Premature end") != std::string::npos || jpeg_is_truncated(data, size))
      throw Error("truncated JPEG (" + reason + ")");
    throw Error("bad JPEG: " + reason);
  };

  // A warning (e.g. junk bytes between header segments) still yields a usable header.
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.h, data, static_cast<unsigned long>(size), &width, &height, &subsamp, &colorspace) != 0 &&
      (tjGetErrorCode(tj.h) != TJERR_WARNING || width <= 0 || height <= 0))
    return retry_or_fail(tj_error(tj.h));
  if (width <= 0 || height <= 0) return retry_or_fail("no frame header");
  check_dimensions(width, height, "JPEG image");

  const tjscalingfactor scale = choose_scaling(width, height, min_short_side);
  const int out_w = TJSCALED(width, scale), out_h = TJSCALED(height, scale);
  const bool cmyk = colorspace == TJCS_CMYK || colorspace == TJCS_YCCK;
  const int pixel_format = cmyk ? TJPF_CMYK : TJPF_RGB;
  const int channels = cmyk ? 4 : 3;
  std::vector<uint8_t> buffer(static_cast<size_t>(out_w) * out_h * channels);
  // LIMITSCANS: a progressive file with thousands of scans is a CPU bomb, not an image.
  if (tjDecompress2(tj.h, data, static_cast<unsigned long>(size), buffer.data(), out_w, 0, out_h, pixel_format,
                    TJFLAG_LIMITSCANS) != 0) {
    const std::string reason = tj_error(tj.h);
    // Warnings such as "extraneous bytes before marker" leave a complete image (Pillow accepts
    // those); running out of data does not.
    if (tjGetErrorCode(tj.h) != TJERR_WARNING || reason.find("Premature end") != std::string::npos ||
        jpeg_is_truncated(data, size))
      return retry_or_fail(reason);
  }

  RgbImage out;
  out.width = out_w;
  out.height = out_h;
  if (!cmyk) {
    out.pixels = std::move(buffer);
    return out;
  }
  // Pillow reads every 4-component JPEG as Adobe-inverted CMYK ("CMYK;I": c' = 255 - stored c) and
  // converts with cmyk2rgb: out = clip(nk - MULDIV255(c', nk)), nk = 255 - k' = stored k.
  out.pixels.resize(static_cast<size_t>(out_w) * out_h * 3);
  auto muldiv255 = [](int a, int b) {
    int t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  const size_t n = static_cast<size_t>(out_w) * out_h;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = &buffer[4 * i];
    const int nk = p[3];
    for (int c = 0; c < 3; ++c) {
      const int v = nk - muldiv255(255 - p[c], nk);
      out.pixels[3 * i + c] = static_cast<uint8_t>(std::clamp(v, 0, 255));
    }
  }
  return out;
}

RgbImage decode_with_stb(const uint8_t* data, size_t size) {
  if (size > static_cast<size_t>(INT_MAX)) throw Error("image data too large (" + std::to_string(size) + " bytes)");
  const int len = static_cast<int>(size);
  auto reason = [] {
    const char* r = stbi_failure_reason();
    return std::string(r ? r : "unknown error");
  };
  // stb rejects oversized PNGs with a vague "unknown image type", so read IHDR first.
  if (starts_with(data, size, 0, "\x89PNG\r\n\x1a\n") && starts_with(data, size, 12, "IHDR") && size >= 24) {
    auto be32 = [&](size_t at) {
      return uint32_t(data[at]) << 24 | uint32_t(data[at + 1]) << 16 | uint32_t(data[at + 2]) << 8 | data[at + 3];
    };
    check_dimensions(be32(16), be32(20), "PNG image");
  }
  int width = 0, height = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &width, &height, &comp))
    throw Error("not an image or unsupported format (" + reason() + ")");
  check_dimensions(width, height, "image");
  // req_comp 3: stb replicates grey, drops alpha and expands palettes, as convert("RGB") does;
  // 16-bit samples keep their high byte (as Pillow does, except for 16-bit greyscale, which it clips).
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(stbi_load_from_memory(data, len, &width, &height, &comp, 3),
                                                  stbi_image_free);
  if (!pixels) throw Error("cannot decode image (" + reason() + ")");
  check_dimensions(width, height, "image");
  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.assign(pixels.get(), pixels.get() + static_cast<size_t>(width) * height * 3);
  return out;
}

}  // namespace

RgbImage decode_image(const uint8_t* data, size_t size, int min_short_side) {
  if (!data || size == 0) throw Error("empty image data");
  if (is_jpeg(data, size)) return decode_jpeg(data, size, min_short_side);
  if (const char* format = unsupported_format(data, size))
    throw Error(std::string("unsupported image format: ") + format);
  return decode_with_stb(data, size);
}

RgbImage load_image_file(const std::string& path, int min_short_side) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error("cannot open image file '" + path + "'");
  const std::streamoff size = in.tellg();
  if (size < 0) throw Error("cannot read image file '" + path + "'");
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  in.seekg(0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw Error("cannot read image file '" + path + "'");
  try {
    return decode_image(bytes.data(), bytes.size(), min_short_side);
  } catch (const Error& e) {
    throw Error("image file '" + path + "': " + e.what());
  }
}

}  // namespace llava
