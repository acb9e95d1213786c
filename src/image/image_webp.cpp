// WebP through libwebp's animation decoder, as Pillow 9.4 opens every WebP file (still or animated):
// WebPAnimDecoderNew with default options (RGBA, no threads), the first frame composited on the canvas
// (transparent black outside it), then the alpha byte dropped.
#include <webp/decode.h>
#include <webp/demux.h>

#include <string>

#include "decoders.h"
#include "llava/error.h"

namespace llava::image_detail {
namespace {

struct AnimDecoder {
  WebPAnimDecoder* dec = nullptr;
  ~AnimDecoder() {
    if (dec) WebPAnimDecoderDelete(dec);
  }
};

// The RIFF header's own length (the chunk size + 8) is more than the data holds.
bool riff_truncated(const uint8_t* data, size_t size) {
  if (size < 12) return true;
  const uint64_t riff = uint64_t(data[4]) | uint64_t(data[5]) << 8 | uint64_t(data[6]) << 16 | uint64_t(data[7]) << 24;
  return riff + 8 > size;
}

[[noreturn]] void fail(const uint8_t* data, size_t size, const std::string& what) {
  if (riff_truncated(data, size)) throw Error("truncated WebP (" + what + ")");
  throw Error("bad WebP (" + what + ")");
}

}  // namespace

RgbImage decode_webp(const uint8_t* data, size_t size) {
  // The canvas size first, so a huge declared canvas fails before the decoder allocates it.
  WebPBitstreamFeatures features;
  const VP8StatusCode status = WebPGetFeatures(data, size, &features);
  if (status != VP8_STATUS_OK) fail(data, size, "cannot read the header, VP8 status " + std::to_string(status));
  check_dimensions(features.width, features.height, "WebP");

  const WebPData input{data, size};
  AnimDecoder anim;
  anim.dec = WebPAnimDecoderNew(&input, nullptr);
  if (!anim.dec) fail(data, size, "libwebp cannot parse the file");
  WebPAnimInfo info;
  if (!WebPAnimDecoderGetInfo(anim.dec, &info)) fail(data, size, "no canvas information");
  check_dimensions(info.canvas_width, info.canvas_height, "WebP");
  uint8_t* rgba = nullptr;
  int timestamp = 0;
  if (!WebPAnimDecoderGetNext(anim.dec, &rgba, &timestamp) || !rgba) fail(data, size, "cannot decode the first frame");

  RgbImage out;
  out.width = static_cast<int>(info.canvas_width);
  out.height = static_cast<int>(info.canvas_height);
  const size_t n = static_cast<size_t>(out.width) * out.height;
  out.pixels.resize(n * 3);
  for (size_t i = 0; i < n; ++i) {
    out.pixels[3 * i] = rgba[4 * i];
    out.pixels[3 * i + 1] = rgba[4 * i + 1];
    out.pixels[3 * i + 2] = rgba[4 * i + 2];
  }
  return out;
}

}  // namespace llava::image_detail
