// JPEG through TurboJPEG: the same libjpeg-turbo Pillow links, with Pillow's settings (ISLOW IDCT, fancy
// upsampling), so RGB and greyscale decodes are bit-identical to Pillow's. 4-component files (CMYK and
// Adobe YCCK, which libjpeg turns into CMYK) go through PIL's cmyk2rgb, read Adobe-inverted as PIL does.
// EXIF orientation is not applied (PIL does not either).
#include <turbojpeg.h>

#include <algorithm>
#include <string>
#include <vector>

#include "decoders.h"
#include "llava/error.h"

namespace llava::image_detail {
namespace {

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

std::string tj_error(tjhandle h) { return printable(tjGetErrorStr2(h)); }

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

// TurboJPEG 2.x refuses a few files that libjpeg (and so Pillow) decodes: unusual sampling factors,
// colour spaces it cannot map to RGB. stb_image's own JPEG decoder handles most of those.
bool stb_can_retry(const std::string& reason) {
  return reason.find("Could not determine") != std::string::npos ||
         reason.find("Unsupported color conversion") != std::string::npos;
}

}  // namespace

RgbImage decode_jpeg(const uint8_t* data, size_t size, int min_short_side) {
  TjHandle tj;
  if (!tj.h) throw Error("cannot initialise TurboJPEG: " + printable(tjGetErrorStr2(nullptr)));
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
  check_dimensions(width, height, "JPEG");

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
  out.pixels.resize(static_cast<size_t>(out_w) * out_h * 3);
  cmyk_to_rgb(buffer.data(), static_cast<size_t>(out_w) * out_h, out.pixels.data(), /*adobe_inverted=*/true);
  return out;
}

}  // namespace llava::image_detail
