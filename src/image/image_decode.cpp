// Image bytes -> RGB uint8, matching PIL's Image.open(...).convert("RGB") as LLaVA uses it: the format is
// sniffed from the leading bytes as PIL's plugins do (_accept), then one decoder per format (decoders.h).
#include <stb_image.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "decoders.h"
#include "llava/error.h"
#include "llava/image.h"

namespace llava {
namespace image_detail {

void check_dimensions(long long width, long long height, const char* format) {
  const std::string size = std::to_string(width) + "x" + std::to_string(height);
  if (width <= 0 || height <= 0) throw Error(std::string("invalid ") + format + " image dimensions " + size);
  if (width > kMaxImagePixels / height)
    throw Error(std::string(format) + " image too large: " + size + " = " + std::to_string(width * height) +
                " pixels (the limit is " + std::to_string(kMaxImagePixels) +
                ", PIL's decompression-bomb limit 2 * Image.MAX_IMAGE_PIXELS)");
}

std::string printable(const char* message) {
  std::string out = message ? message : "unknown error";
  if (out.size() > 200) out = out.substr(0, 200) + "...";
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7E) c = '?';
  return out;
}

Palette::Palette(const uint8_t* colours, int entries) {
  for (int i = 0; i < 256; ++i) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = static_cast<uint8_t>(i);
  if (colours && entries > 0) std::memcpy(rgb, colours, static_cast<size_t>(std::min(entries, 256)) * 3);
}

void cmyk_to_rgb(const uint8_t* cmyk, size_t n, uint8_t* rgb, bool adobe_inverted) {
  // out = CLIP8(nk - MULDIV255(c, nk)), nk = 255 - k, MULDIV255(a, b) = ((a*b + 128) >> 8 + a*b + 128) >> 8
  const int flip = adobe_inverted ? 255 : 0;
  for (size_t i = 0; i < n; ++i, cmyk += 4, rgb += 3) {
    const int nk = 255 - (cmyk[3] ^ flip);
    for (int c = 0; c < 3; ++c) {
      const int t = (cmyk[c] ^ flip) * nk + 128;
      rgb[c] = static_cast<uint8_t>(std::clamp(nk - (((t >> 8) + t) >> 8), 0, 255));
    }
  }
}

namespace {

uint32_t le32(const uint8_t* p) { return p[0] | p[1] << 8 | p[2] << 16 | uint32_t(p[3]) << 24; }

// What stb_image is about to read, for messages (it tries TGA last, as it has no signature).
const char* stb_format(const uint8_t* d, size_t n) {
  if (n >= 2 && d[0] == 'B' && d[1] == 'M') return "BMP";
  if (n >= 4 && std::memcmp(d, "8BPS", 4) == 0) return "PSD";
  if (n >= 2 && d[0] == 'P' && d[1] == '7') return "PAM";
  if (n >= 2 && d[0] == '#' && d[1] == '?') return "HDR";
  if (n >= 4 && std::memcmp(d, "\x53\x80\xF6\x34", 4) == 0) return "PIC";
  return "TGA";  // stb's format without a signature, tried last
}

// stb_image reads past the end of a BMP as zeros where PIL raises "image file is truncated". For
// uncompressed and bit-field BMPs the pixel array's size follows from the header (dimensions checked).
void check_bmp_complete(const uint8_t* d, size_t size) {
  if (size < 26) throw Error("truncated BMP (the header is incomplete)");
  const uint32_t offset = le32(d + 10), header = le32(d + 14);
  long long width = 0, height = 0, bits = 0, compression = 0;
  if (header == 12) {  // OS/2 BITMAPCOREHEADER
    width = d[18] | d[19] << 8, height = d[20] | d[21] << 8, bits = d[24] | d[25] << 8;
  } else {
    if (size < 34) throw Error("truncated BMP (the header is incomplete)");
    width = static_cast<int32_t>(le32(d + 18)), height = static_cast<int32_t>(le32(d + 22));
    bits = d[28] | d[29] << 8, compression = le32(d + 30);
  }
  if ((compression != 0 && compression != 3 && compression != 6) || width <= 0 || height == 0 || bits <= 0) return;
  const unsigned long long row = ((static_cast<unsigned long long>(bits) * width + 31) / 32) * 4;
  const unsigned long long needed = offset + row * static_cast<unsigned long long>(std::llabs(height));
  if (needed > size)
    throw Error("truncated BMP (the pixel data needs " + std::to_string(needed) + " bytes, the file has " +
                std::to_string(size) + ")");
}

// The same for TGA (PIL: "image file is truncated"): the pixels after the header, ID and colour map, raw or
// as run-length packets (a header byte: 1 + its low 7 bits pixels, one value if its high bit is set).
void check_tga_complete(const uint8_t* d, size_t size) {
  if (size < 18) throw Error("truncated TGA (the header is incomplete)");
  const size_t colour_map = d[1] ? static_cast<size_t>(d[5] | d[6] << 8) * ((d[7] + 7) / 8) : 0;
  const size_t pixel = (d[16] + 7) / 8, pixels = static_cast<size_t>(d[12] | d[13] << 8) * (d[14] | d[15] << 8);
  size_t pos = 18 + d[0] + colour_map, done = 0;
  if (!(d[2] & 8)) {
    pos += pixels * pixel;
    done = pixels;
  }
  while (done < pixels && pos < size) {
    const size_t count = (d[pos] & 0x7F) + 1;
    pos += 1 + ((d[pos] & 0x80) ? pixel : count * pixel);
    done += count;
  }
  if (pos > size || done < pixels)
    throw Error("truncated TGA (the pixel data ends after " + std::to_string(std::min(done, pixels)) + " of " +
                std::to_string(pixels) + " pixels)");
}

}  // namespace

RgbImage decode_with_stb(const uint8_t* data, size_t size) {
  if (size > static_cast<size_t>(INT_MAX)) throw Error("image data too large (" + std::to_string(size) + " bytes)");
  const int len = static_cast<int>(size);
  const char* format = stb_format(data, size);
  auto reason = [] { return printable(stbi_failure_reason()); };
  int width = 0, height = 0, comp = 0;
  if (!stbi_info_from_memory(data, len, &width, &height, &comp))
    throw Error("not an image or unsupported format (" + reason() + ")");
  check_dimensions(width, height, format);
  if (std::strcmp(format, "BMP") == 0) check_bmp_complete(data, size);
  if (std::strcmp(format, "TGA") == 0) check_tga_complete(data, size);
  // req_comp 3: stb replicates grey and drops alpha, as convert("RGB") does.
  std::unique_ptr<stbi_uc, void (*)(void*)> pixels(stbi_load_from_memory(data, len, &width, &height, &comp, 3),
                                                  stbi_image_free);
  if (!pixels) throw Error(std::string("cannot decode ") + format + " image (" + reason() + ")");
  check_dimensions(width, height, format);
  RgbImage out;
  out.width = width;
  out.height = height;
  out.pixels.assign(pixels.get(), pixels.get() + static_cast<size_t>(width) * height * 3);
  return out;
}

}  // namespace image_detail

namespace {

using namespace std::string_view_literals;

bool starts_with(const uint8_t* data, size_t size, size_t offset, std::string_view magic) {
  return size >= offset + magic.size() && std::memcmp(data + offset, magic.data(), magic.size()) == 0;
}

enum class Format { kJpeg, kPng, kGif, kWebp, kTiff, kPnm, kOther };

// The leading bytes PIL's plugins accept (their _accept functions).
Format sniff(const uint8_t* data, size_t size) {
  if (starts_with(data, size, 0, "\xFF\xD8\xFF"sv)) return Format::kJpeg;
  if (starts_with(data, size, 0, "\x89PNG\r\n\x1a\n"sv)) return Format::kPng;
  if (starts_with(data, size, 0, "GIF87a"sv) || starts_with(data, size, 0, "GIF89a"sv)) return Format::kGif;
  if (starts_with(data, size, 0, "RIFF"sv) && starts_with(data, size, 8, "WEBP"sv)) return Format::kWebp;
  for (std::string_view tiff : {"MM\0*"sv, "II*\0"sv, "MM*\0"sv, "II\0*"sv, "MM\0+"sv, "II+\0"sv})
    if (starts_with(data, size, 0, tiff)) return Format::kTiff;
  if (size >= 2 && data[0] == 'P' && data[1] >= '1' && data[1] <= '6') return Format::kPnm;
  return Format::kOther;
}

// Formats PIL 9.4 cannot open either (without plugins): say so instead of "not an image".
const char* unsupported_format(const uint8_t* data, size_t size) {
  if (starts_with(data, size, 4, "ftypavif")) return "AVIF";
  if (starts_with(data, size, 4, "ftyphei") || starts_with(data, size, 4, "ftypmif1")) return "HEIF";
  return nullptr;
}

}  // namespace

RgbImage decode_image(const uint8_t* data, size_t size, int min_short_side) {
  if (!data || size == 0) throw Error("empty image data");
  switch (sniff(data, size)) {
    case Format::kJpeg: return image_detail::decode_jpeg(data, size, min_short_side);
    case Format::kPng: return image_detail::decode_png(data, size);
    case Format::kGif: return image_detail::decode_gif(data, size);
    case Format::kWebp: return image_detail::decode_webp(data, size);
    case Format::kTiff: return image_detail::decode_tiff(data, size);
    case Format::kPnm: return image_detail::decode_pnm(data, size);
    case Format::kOther: break;
  }
  if (const char* format = unsupported_format(data, size))
    throw Error(std::string("unsupported image format: ") + format);
  return image_detail::decode_with_stb(data, size);
}

}  // namespace llava
