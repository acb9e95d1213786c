// PNG through libpng, converted as PIL 9.4 reads PNGs (PngImagePlugin's mode table) and then
// convert("RGB"): grey of 1/2/4 bits scaled to 0..255, 16-bit RGB / grey+alpha / RGBA keep the high
// byte ("RGB;16B", "LA;16B", "RGBA;16B"), 16-bit grey is mode "I" and so clipped to 255, palettes go
// through PIL's 256-entry table (indices past the file's PLTE read the grey ramp), alpha and tRNS are
// dropped. stb_image differs on the last three, hence libpng.
#include <png.h>

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "decoders.h"
#include "llava/error.h"

namespace llava::image_detail {
namespace {

struct PngSource {
  const uint8_t* data;
  size_t size, pos;
  bool truncated;
  char message[200];  // set by on_error just before its longjmp
};

void on_error(png_structp png, png_const_charp message) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->message, sizeof src->message, "%s", message ? message : "unknown error");
  png_longjmp(png, 1);
}

void on_warning(png_structp, png_const_charp) {}  // benign problems (bad ancillary chunks): ignored, as PIL

void on_read(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->pos) {
    src->truncated = true;
    png_error(png, "the data ends early");
  }
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

struct PngReadGuard {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReadGuard() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

// How decoded rows become RGB.
enum class Rows {
  kRgb,      // libpng's transforms already give RGB8 (strip 16 -> high byte, strip alpha, grey -> RGB)
  kGrey16,   // big-endian 16-bit grey, clipped to 255 (PIL mode "I" -> "RGB")
  kPalette,  // one index byte per pixel, looked up in PIL's palette
};

Rows set_transforms(png_structp png, png_infop info, int bit_depth, int color_type) {
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_set_packing(png);  // 1/2/4-bit indices -> one byte each, unscaled
    return Rows::kPalette;
  }
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16) return Rows::kGrey16;
  if (bit_depth == 16) png_set_strip_16(png);  // the high byte, not libpng's rounding png_set_scale_16
  if (bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);  // v * 255 / (2^bits - 1), as PIL's "L;2"/"L;4"/"1"
  if (color_type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  if (!(color_type & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
  return Rows::kRgb;
}

// Everything between setjmp and a possible longjmp lives in `guard`, `src` and `decoded`, all set up by
// the caller, so the jump skips no destructor. Returns false with src.message set on a libpng error.
bool read_png(PngReadGuard& guard, PngSource& src, RgbImage& out, std::vector<uint8_t>& decoded, Rows& rows,
              std::vector<png_bytep>& row_pointers, std::vector<uint8_t>& palette) {
  png_structp png = guard.png;
  png_infop info = guard.info;
  if (setjmp(png_jmpbuf(png))) return false;
  png_set_read_fn(png, &src, on_read);
  png_set_user_limits(png, 0x7fffffff, 0x7fffffff);  // no per-side limit (PIL has none): check_dimensions
  png_read_info(png, info);
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  check_dimensions(width, height, "PNG");
  rows = set_transforms(png, info, bit_depth, color_type);
  if (rows == Rows::kPalette) {
    png_colorp colours = nullptr;
    int entries = 0;
    png_get_PLTE(png, info, &colours, &entries);
    palette.resize(static_cast<size_t>(entries) * 3);
    for (int i = 0; i < entries; ++i)
      palette[3 * i] = colours[i].red, palette[3 * i + 1] = colours[i].green, palette[3 * i + 2] = colours[i].blue;
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const size_t row_bytes = png_get_rowbytes(png, info);
  const size_t expected = static_cast<size_t>(width) * (rows == Rows::kRgb ? 3 : rows == Rows::kGrey16 ? 2 : 1);
  if (row_bytes != expected) png_error(png, "unexpected row layout after libpng's transforms");
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.pixels.resize(static_cast<size_t>(width) * height * 3);
  uint8_t* target = out.pixels.data();
  if (rows != Rows::kRgb) {
    decoded.resize(row_bytes * height);
    target = decoded.data();
  }
  row_pointers.resize(height);
  for (png_uint_32 y = 0; y < height; ++y) row_pointers[y] = target + y * row_bytes;
  png_read_image(png, row_pointers.data());  // no png_read_end: PIL ignores what follows the image data
  return true;
}

}  // namespace

RgbImage decode_png(const uint8_t* data, size_t size) {
  PngSource src{data, size, 0, false, {}};
  PngReadGuard guard;
  guard.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, on_error, on_warning);
  if (!guard.png) throw Error("cannot initialise libpng");
  guard.info = png_create_info_struct(guard.png);
  if (!guard.info) throw Error("cannot initialise libpng");

  RgbImage out;
  std::vector<uint8_t> decoded, palette;
  std::vector<png_bytep> row_pointers;
  Rows rows = Rows::kRgb;
  if (!read_png(guard, src, out, decoded, rows, row_pointers, palette))
    throw Error(std::string(src.truncated ? "truncated PNG (" : "bad PNG (") + printable(src.message) + ")");

  const size_t n = static_cast<size_t>(out.width) * out.height;
  uint8_t* rgb = out.pixels.data();
  if (rows == Rows::kGrey16) {
    for (size_t i = 0; i < n; ++i) {
      const int v = decoded[2 * i] << 8 | decoded[2 * i + 1];
      rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = static_cast<uint8_t>(std::min(v, 255));
    }
  } else if (rows == Rows::kPalette) {
    const Palette table(palette.data(), static_cast<int>(palette.size() / 3));
    for (size_t i = 0; i < n; ++i) std::memcpy(rgb + 3 * i, table.rgb + 3 * decoded[i], 3);
  }
  return out;
}

}  // namespace llava::image_detail
