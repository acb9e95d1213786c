#pragma once
// The per-format decoders behind decode_image (image_decode.cpp picks one from the leading bytes) and the
// pieces they share. Each returns RGB as PIL 9.4's Image.open(...).convert("RGB") does, or throws
// llava::Error with the reason (decode_image adds nothing, load_image_file adds the file name).
#include <cstddef>
#include <cstdint>
#include <string>

#include "llava/image.h"

namespace llava::image_detail {

// Throws "invalid FORMAT image dimensions WxH" or "FORMAT image too large: WxH = N pixels (the limit ...)"
// unless 0 < width, height and width * height <= kMaxImagePixels.
void check_dimensions(long long width, long long height, const char* format);

// A decoder library's message made safe to print: anything but printable ASCII becomes '?', at most 200
// characters (libraries sometimes quote tag or chunk names taken from the input).
std::string printable(const char* message);

// PIL's 256-entry palette: entry i starts as grey (i, i, i) and the file's first `entries` colours
// (R, G, B bytes) replace the start. PIL looks indices past the file's table up in that grey ramp.
struct Palette {
  uint8_t rgb[256 * 3];
  Palette(const uint8_t* colours, int entries);
};

// PIL's cmyk2rgb (Convert.c), `n` pixels of 4 bytes -> 3 bytes. `adobe_inverted`: the bytes are stored
// inverted (JPEG: PIL reads every 4-component JPEG as "CMYK;I"), else as TIFF stores them (0 = no ink).
void cmyk_to_rgb(const uint8_t* cmyk, size_t n, uint8_t* rgb, bool adobe_inverted);

RgbImage decode_jpeg(const uint8_t* data, size_t size, int min_short_side);
RgbImage decode_png(const uint8_t* data, size_t size);
RgbImage decode_gif(const uint8_t* data, size_t size);
RgbImage decode_webp(const uint8_t* data, size_t size);
RgbImage decode_tiff(const uint8_t* data, size_t size);
RgbImage decode_pnm(const uint8_t* data, size_t size);  // data starts "P1".."P6"
// BMP, PSD, TGA, HDR, ... (and JPEGs TurboJPEG refuses).
RgbImage decode_with_stb(const uint8_t* data, size_t size);

}  // namespace llava::image_detail
