// TIFF through libtiff (every compression it has: LZW, Deflate, PackBits, JPEG, CCITT, ...): the first
// page, converted as PIL 9.4 reads TIFFs (TiffImagePlugin's OPEN_INFO modes) and then convert("RGB").
// libtiff decodes the strips or tiles; the samples are converted here, as Pillow's unpackers do:
// grey 1/2/4/8-bit scaled (inverted for min-is-white), 16-bit grey clipped to 255, palettes through the
// colour map's high bytes, RGB(A) 8/16-bit (high byte), associated alpha un-premultiplied ("RGBa"), other
// alpha and extra samples dropped, CMYK through PIL's cmyk2rgb, JPEG YCbCr decoded to RGB by libjpeg, other
// YCbCr through libtiff's RGBA interface (as Pillow does). The Orientation tag IS applied: Pillow 9.4
// transposes TIFFs by it (TiffImageFile.load_end), unlike EXIF orientation in JPEG, PNG or WebP.
// Layouts PIL cannot open (float, 32-bit, LAB, ...) are errors that name the layout.
#include <tiffio.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "decoders.h"
#include "llava/error.h"

namespace llava::image_detail {
namespace {

// ---- libtiff reading from memory, with its messages kept per handle (decoding runs in worker threads) ----

struct TiffSource {
  const uint8_t* data;
  uint64_t size, pos;
  bool short_read;  // libtiff asked for bytes past the end
  char message[200], warning[200];  // libtiff's first error and first warning
};

tmsize_t tiff_read(thandle_t h, void* out, tmsize_t n) {
  auto* src = static_cast<TiffSource*>(h);
  const uint64_t want = static_cast<uint64_t>(n < 0 ? 0 : n);
  const uint64_t take = src->pos >= src->size ? 0 : std::min(want, src->size - src->pos);
  std::memcpy(out, src->data + src->pos, take);
  src->pos += take;
  src->short_read = src->short_read || take < want;
  return static_cast<tmsize_t>(take);
}
tmsize_t tiff_write(thandle_t, void*, tmsize_t) { return 0; }
toff_t tiff_seek(thandle_t h, toff_t offset, int whence) {
  auto* src = static_cast<TiffSource*>(h);
  src->pos = whence == SEEK_SET ? offset : whence == SEEK_CUR ? src->pos + offset : src->size + offset;
  return src->pos;
}
int tiff_close(thandle_t) { return 0; }
toff_t tiff_size(thandle_t h) { return static_cast<TiffSource*>(h)->size; }
int tiff_map(thandle_t h, void** base, toff_t* size) {
  auto* src = static_cast<TiffSource*>(h);
  *base = const_cast<uint8_t*>(src->data);  // read-only use: libtiff copies before it changes raw data
  *size = src->size;
  return 1;
}
void tiff_unmap(thandle_t, void*, toff_t) {}

int on_error(TIFF*, void* user, const char* module, const char* format, va_list args) {
  auto* src = static_cast<TiffSource*>(user);
  if (!src->message[0]) std::vsnprintf(src->message, sizeof src->message, format, args);  // the first one
  return 1;  // handled: libtiff prints nothing
}
// Warnings are kept too: libtiff "repairs" some damage with one (a colour map cut off by the end of the
// file: "IO error during reading of ColorMap; tag ignored", and the image turns greyscale).
int on_warning(TIFF*, void* user, const char*, const char* format, va_list args) {
  auto* src = static_cast<TiffSource*>(user);
  if (!src->warning[0]) std::vsnprintf(src->warning, sizeof src->warning, format, args);
  return 1;
}

struct TiffHandle {
  TIFF* tif = nullptr;
  ~TiffHandle() {
    if (tif) TIFFClose(tif);
  }
};

// The first directory's offset (classic or BigTIFF header) lies past the end: the file is cut off.
bool directory_past_end(const TiffSource& src) {
  const uint8_t* d = src.data;
  const bool little = d[0] == 'I', big_tiff = d[2] == 0x2B || d[3] == 0x2B;
  const int at = big_tiff ? 8 : 4, bytes = big_tiff ? 8 : 4;
  if (src.size < static_cast<uint64_t>(at + bytes)) return true;
  uint64_t offset = 0;
  for (int i = 0; i < bytes; ++i) offset |= uint64_t(d[at + (little ? i : bytes - 1 - i)]) << (8 * i);
  return offset + 2 > src.size;
}

[[noreturn]] void fail(const TiffSource& src, const std::string& what) {
  const std::string message = src.message;
  const std::string detail = message.empty() ? "" : ": " + printable(src.message);
  const bool truncated = src.short_read || directory_past_end(src) || message.find("Read error") != std::string::npos ||
                         message.find("Seek error") != std::string::npos;
  throw Error(std::string(truncated ? "truncated TIFF (" : "bad TIFF (") + what + detail + ")");
}

// ---- which of PIL's modes the tags describe, and how one row of samples becomes RGB ----

enum class Kind { kGrey, kGrey16, kGreyAlpha, kPalette, kPaletteAlpha, kRgb, kRgb16, kCmyk, kCmyk16, kYcbcrRgba };

struct Layout {
  Kind kind = Kind::kGrey;
  int bits = 8, samples = 1;    // per sample, per pixel
  bool invert = false;          // min-is-white grey
  bool is_signed = false;       // 16-bit grey, sample format 2 ("I;16S": negative -> 0)
  bool premultiplied = false;   // associated alpha in sample 3 ("RGBa")
};

struct Tags {
  uint32_t width = 0, height = 0;
  uint16_t photometric = 0, compression = 1, planar = 1, bits = 1, samples = 1, sample_format = 1;
  std::vector<uint16_t> extra;
  bool big_endian = false;
};

Tags read_tags(TIFF* tif) {
  Tags t;
  TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &t.width);
  TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &t.height);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PHOTOMETRIC, &t.photometric);
  TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &t.compression);
  TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &t.planar);
  TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &t.bits);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &t.samples);
  TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLEFORMAT, &t.sample_format);
  uint16_t count = 0;
  uint16_t* values = nullptr;
  if (TIFFGetField(tif, TIFFTAG_EXTRASAMPLES, &count, &values) && values) t.extra.assign(values, values + count);
  if (t.compression == COMPRESSION_OJPEG) t.photometric = PHOTOMETRIC_YCBCR;  // PIL: old JPEG is YCbCr
  t.big_endian = TIFFIsBigEndian(tif);
  return t;
}

std::string describe(const Tags& t) {
  std::string extra;
  for (uint16_t e : t.extra) extra += (extra.empty() ? "" : ",") + std::to_string(e);
  return "photometric " + std::to_string(t.photometric) + ", " + std::to_string(t.samples) + " x " +
         std::to_string(t.bits) + "-bit samples, sample format " + std::to_string(t.sample_format) +
         ", extra samples (" + extra + ")";
}

// The OPEN_INFO entries of PIL 9.4 this decoder reproduces; anything else PIL cannot open either, or
// opens as a mode (F, I;32, LAB, I;12) whose RGB conversion is not supported here.
bool classify(const Tags& t, Layout& l) {
  l.bits = t.bits;
  l.samples = t.samples;
  const size_t nx = t.extra.size();
  const int first_extra = nx ? t.extra[0] : -1;
  const bool uint = t.sample_format == SAMPLEFORMAT_UINT;
  switch (t.photometric) {
    case PHOTOMETRIC_MINISWHITE:
    case PHOTOMETRIC_MINISBLACK:
      l.invert = t.photometric == PHOTOMETRIC_MINISWHITE;
      if (uint && t.samples == 1 && nx == 0 && (t.bits == 1 || t.bits == 2 || t.bits == 4 || t.bits == 8))
        return l.kind = Kind::kGrey, true;
      if (t.bits == 16 && t.samples == 1 && nx == 0 && (uint || t.sample_format == SAMPLEFORMAT_INT)) {
        // (II, 0|1, uint), (MM, 1, uint), (II|MM, 1, int); min-is-white is not inverted at 16 bits
        if (!uint && l.invert) return false;
        if (uint && l.invert && t.big_endian) return false;
        l.is_signed = !uint;
        return l.kind = Kind::kGrey16, true;
      }
      if (uint && !l.invert && t.bits == 8 && t.samples == 2 && nx == 1 && first_extra == EXTRASAMPLE_UNASSALPHA)
        return l.kind = Kind::kGreyAlpha, true;
      return false;
    case PHOTOMETRIC_PALETTE:
      if (!uint) return false;
      if (t.samples == 1 && nx == 0 && (t.bits == 1 || t.bits == 2 || t.bits == 4 || t.bits == 8))
        return l.kind = Kind::kPalette, true;
      if (t.bits == 8 && t.samples == 2 && nx == 1 && first_extra == EXTRASAMPLE_UNASSALPHA)
        return l.kind = Kind::kPaletteAlpha, true;
      return false;
    case PHOTOMETRIC_RGB: {
      if (!uint || t.samples < 3 || t.samples != 3 + nx + (t.samples == 4 && nx == 0)) return false;
      for (size_t i = 1; i < nx; ++i)
        if (t.extra[i] != EXTRASAMPLE_UNSPECIFIED) return false;
      const bool known_alpha = nx == 0 || first_extra <= EXTRASAMPLE_UNASSALPHA || (first_extra == 999 && nx == 1);
      l.premultiplied = first_extra == EXTRASAMPLE_ASSOCALPHA;
      if (t.bits == 8 && t.samples <= 6 && known_alpha) return l.kind = Kind::kRgb, true;
      if (t.bits == 16 && t.samples <= 4 && nx <= 1 && known_alpha && first_extra != 999)
        return l.kind = Kind::kRgb16, true;
      return false;
    }
    case PHOTOMETRIC_SEPARATED:
      if (!uint || t.samples != 4 + nx) return false;
      for (uint16_t e : t.extra)
        if (e != EXTRASAMPLE_UNSPECIFIED) return false;
      if (t.bits == 8 && t.samples <= 6) return l.kind = Kind::kCmyk, true;
      if (t.bits == 16 && t.samples == 4 && !t.big_endian) return l.kind = Kind::kCmyk16, true;
      return false;
    case PHOTOMETRIC_YCBCR:
      if (!uint || t.bits != 8 || t.samples != 3 || nx != 0) return false;
      if (t.compression == COMPRESSION_JPEG && t.planar == PLANARCONFIG_CONTIG) {
        l.kind = Kind::kRgb;  // libjpeg converts to RGB (JPEGCOLORMODE_RGB), as Pillow asks it to
        return true;
      }
      return l.kind = Kind::kYcbcrRgba, true;
    default:
      return false;
  }
}

uint8_t clip8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

uint16_t sample16(const uint8_t* in, size_t i) {
  uint16_t v;
  std::memcpy(&v, in + 2 * i, 2);
  return v;
}

// One row of interleaved samples (libtiff gives 16-bit samples in native byte order) -> RGB.
void convert_row(const uint8_t* in, int width, const Layout& l, const Palette* palette, uint8_t* rgb) {
  const int s = l.samples;
  for (int x = 0; x < width; ++x, rgb += 3) {
    switch (l.kind) {
      case Kind::kGrey: {
        const int bit = x * l.bits, max = (1 << l.bits) - 1;
        const int v = (in[bit >> 3] >> (8 - l.bits - (bit & 7))) & max;
        const int grey = v * 255 / max;
        rgb[0] = rgb[1] = rgb[2] = static_cast<uint8_t>(l.invert ? 255 - grey : grey);
        break;
      }
      case Kind::kGrey16: {
        const int v = l.is_signed ? static_cast<int16_t>(sample16(in, x)) : sample16(in, x);
        rgb[0] = rgb[1] = rgb[2] = clip8(v);
        break;
      }
      case Kind::kGreyAlpha: rgb[0] = rgb[1] = rgb[2] = in[2 * x]; break;
      case Kind::kPalette: {
        const int bit = x * l.bits;
        const int index = (in[bit >> 3] >> (8 - l.bits - (bit & 7))) & ((1 << l.bits) - 1);
        std::memcpy(rgb, palette->rgb + 3 * index, 3);
        break;
      }
      case Kind::kPaletteAlpha: std::memcpy(rgb, palette->rgb + 3 * in[2 * x], 3); break;
      case Kind::kRgb:
      case Kind::kRgb16: {
        int v[4] = {0, 0, 0, 255};
        for (int c = 0; c < std::min(s, 4); ++c) v[c] = l.kind == Kind::kRgb ? in[s * x + c] : sample16(in, s * x + c) >> 8;
        const int a = l.premultiplied ? v[3] : 255;  // Pillow's unpackRGBa: CLIP8(c * 255 / a), 0 when a == 0
        for (int c = 0; c < 3; ++c) rgb[c] = a == 255 ? static_cast<uint8_t>(v[c]) : a == 0 ? 0 : clip8(v[c] * 255 / a);
        break;
      }
      case Kind::kCmyk:
      case Kind::kCmyk16: {
        uint8_t cmyk[4];
        for (int c = 0; c < 4; ++c) cmyk[c] = l.kind == Kind::kCmyk ? in[s * x + c] : static_cast<uint8_t>(sample16(in, s * x + c) >> 8);
        cmyk_to_rgb(cmyk, 1, rgb, false);
        break;
      }
      case Kind::kYcbcrRgba: break;  // decoded by read_rgba
    }
  }
}

// ---- reading the samples: strips or tiles, one or several planes, a band of rows at a time ----

struct Band {
  uint32_t rows = 0;                    // rows per strip or tile
  size_t row_bytes = 0;                 // one plane's row (TIFFScanlineSize)
  std::vector<uint8_t> data;            // planes x rows x row_bytes
  uint8_t* plane(int p) { return data.data() + static_cast<size_t>(p) * rows * row_bytes; }
};

// libtiff fails silently on a tile whose data lies past the end of a memory-mapped file: say so first.
void check_in_file(TIFF* tif, const TiffSource& src, uint32_t strile, const char* what) {
  const uint64_t offset = TIFFGetStrileOffset(tif, strile), bytes = TIFFGetStrileByteCount(tif, strile);
  if (offset > src.size || bytes > src.size - offset)
    throw Error(std::string("truncated TIFF (") + what + " " + std::to_string(strile) + " ends at byte " +
                std::to_string(offset + bytes) + ", the file has " + std::to_string(src.size) + ")");
}

// Rows [y0, y0 + n) of every plane into band.
void read_band(TIFF* tif, const TiffSource& src, const Tags& t, int planes, uint32_t y0, uint32_t n, Band& band,
               std::vector<uint8_t>& tile) {
  for (int p = 0; p < planes; ++p) {
    uint8_t* dest = band.plane(p);
    if (!TIFFIsTiled(tif)) {
      const tmsize_t want = static_cast<tmsize_t>(n * band.row_bytes);
      const uint32_t strip = TIFFComputeStrip(tif, y0, static_cast<uint16_t>(p));
      check_in_file(tif, src, strip, "strip");
      if (TIFFReadEncodedStrip(tif, strip, dest, want) < 0)
        fail(src, "cannot decode strip at row " + std::to_string(y0));
      continue;
    }
    uint32_t tile_w = 0, tile_h = 0;
    TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tile_w);
    TIFFGetField(tif, TIFFTAG_TILELENGTH, &tile_h);
    const size_t tile_row = static_cast<size_t>(TIFFTileRowSize64(tif));
    const int pixel_bits = t.bits * (planes > 1 ? 1 : t.samples);
    for (uint32_t x = 0; x < t.width; x += tile_w) {
      check_in_file(tif, src, TIFFComputeTile(tif, x, y0, 0, static_cast<uint16_t>(p)), "tile");
      if (TIFFReadTile(tif, tile.data(), x, y0, 0, static_cast<uint16_t>(p)) < 0)
        fail(src, "cannot decode tile at " + std::to_string(x) + "," + std::to_string(y0));
      const size_t offset = static_cast<size_t>(x) * pixel_bits / 8;
      const size_t bytes = std::min(tile_row, band.row_bytes - offset);
      for (uint32_t r = 0; r < n; ++r) std::memcpy(dest + r * band.row_bytes + offset, &tile[r * tile_row], bytes);
    }
  }
}

RgbImage read_samples(TIFF* tif, const TiffSource& src, const Tags& t, const Layout& l, const Palette* palette) {
  const int planes = t.planar == PLANARCONFIG_SEPARATE ? t.samples : 1;
  if (planes > 1 && t.bits != 8 && t.bits != 16) fail(src, "separate planes of " + std::to_string(t.bits) + "-bit samples");
  Band band;
  band.row_bytes = static_cast<size_t>(TIFFScanlineSize64(tif));
  if (TIFFIsTiled(tif)) {
    TIFFGetField(tif, TIFFTAG_TILELENGTH, &band.rows);
  } else {
    TIFFGetFieldDefaulted(tif, TIFFTAG_ROWSPERSTRIP, &band.rows);
  }
  band.rows = std::clamp<uint32_t>(band.rows, 1, t.height);
  const size_t min_row = (static_cast<size_t>(t.width) * t.bits * (planes > 1 ? 1 : t.samples) + 7) / 8;
  if (band.row_bytes < min_row) fail(src, "inconsistent row size");
  band.data.resize(static_cast<size_t>(planes) * band.rows * band.row_bytes);
  std::vector<uint8_t> tile(TIFFIsTiled(tif) ? static_cast<size_t>(TIFFTileSize64(tif)) : 0);
  if (TIFFIsTiled(tif) && (tile.empty() || TIFFTileRowSize64(tif) == 0)) fail(src, "bad tile size");

  RgbImage out;
  out.width = static_cast<int>(t.width);
  out.height = static_cast<int>(t.height);
  out.pixels.resize(static_cast<size_t>(t.width) * t.height * 3);
  const size_t sample_bytes = t.bits / 8;
  std::vector<uint8_t> joined(planes > 1 ? static_cast<size_t>(t.width) * t.samples * sample_bytes : 0);
  for (uint32_t y0 = 0; y0 < t.height; y0 += band.rows) {
    const uint32_t n = std::min(band.rows, t.height - y0);
    read_band(tif, src, t, planes, y0, n, band, tile);
    for (uint32_t r = 0; r < n; ++r) {
      const uint8_t* row = band.plane(0) + r * band.row_bytes;
      if (planes > 1) {  // interleave the planes' samples
        for (int p = 0; p < planes; ++p)
          for (uint32_t x = 0; x < t.width; ++x)
            std::memcpy(&joined[(static_cast<size_t>(x) * t.samples + p) * sample_bytes],
                        band.plane(p) + r * band.row_bytes + x * sample_bytes, sample_bytes);
        row = joined.data();
      }
      convert_row(row, out.width, l, palette, &out.pixels[static_cast<size_t>(y0 + r) * t.width * 3]);
    }
  }
  return out;
}

// YCbCr other than contiguous JPEG: libtiff's RGBA interface, orientation forced to top-left (Pillow).
RgbImage read_rgba(TIFF* tif, const TiffSource& src, const Tags& t) {
  char message[1024] = "";
  TIFFRGBAImage img;
  if (!TIFFRGBAImageOK(tif, message) || !TIFFRGBAImageBegin(&img, tif, 0, message))
    fail(src, std::string("libtiff cannot convert this YCbCr image: ") + printable(message));
  img.orientation = ORIENTATION_TOPLEFT;
  img.req_orientation = ORIENTATION_TOPLEFT;
  std::vector<uint32_t> raster(static_cast<size_t>(t.width) * t.height);
  const int ok = TIFFRGBAImageGet(&img, raster.data(), t.width, t.height);
  TIFFRGBAImageEnd(&img);
  if (!ok) fail(src, "cannot decode the YCbCr image");
  RgbImage out;
  out.width = static_cast<int>(t.width);
  out.height = static_cast<int>(t.height);
  out.pixels.resize(raster.size() * 3);
  for (size_t i = 0; i < raster.size(); ++i) {
    out.pixels[3 * i] = static_cast<uint8_t>(TIFFGetR(raster[i]));
    out.pixels[3 * i + 1] = static_cast<uint8_t>(TIFFGetG(raster[i]));
    out.pixels[3 * i + 2] = static_cast<uint8_t>(TIFFGetB(raster[i]));
  }
  return out;
}

// PIL's TiffImageFile.load_end: Image.transpose by the Orientation tag (2..8), on every decode path.
RgbImage orient(RgbImage in, int orientation) {
  if (orientation < 2 || orientation > 8) return in;
  const int w = in.width, h = in.height;
  RgbImage out;
  out.width = orientation >= 5 ? h : w;
  out.height = orientation >= 5 ? w : h;
  out.pixels.resize(in.pixels.size());
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (orientation) {
        case 2: sx = w - 1 - x; break;                   // FLIP_LEFT_RIGHT
        case 3: sx = w - 1 - x, sy = h - 1 - y; break;   // ROTATE_180
        case 4: sy = h - 1 - y; break;                   // FLIP_TOP_BOTTOM
        case 5: sx = y, sy = x; break;                   // TRANSPOSE
        case 6: sx = y, sy = h - 1 - x; break;           // ROTATE_270
        case 7: sx = w - 1 - y, sy = h - 1 - x; break;   // TRANSVERSE
        default: sx = w - 1 - y, sy = x; break;          // 8: ROTATE_90
      }
      std::memcpy(&out.pixels[(static_cast<size_t>(y) * out.width + x) * 3],
                  &in.pixels[(static_cast<size_t>(sy) * w + sx) * 3], 3);
    }
  return out;
}

struct OpenOptions {
  TIFFOpenOptions* opts = TIFFOpenOptionsAlloc();
  ~OpenOptions() { TIFFOpenOptionsFree(opts); }
};

}  // namespace

RgbImage decode_tiff(const uint8_t* data, size_t size) {
  TiffSource src{data, size, 0, false, {}, {}};
  OpenOptions options;
  if (!options.opts) throw Error("cannot initialise libtiff");
  TIFFOpenOptionsSetErrorHandlerExtR(options.opts, on_error, &src);
  TIFFOpenOptionsSetWarningHandlerExtR(options.opts, on_warning, &src);
  TIFFOpenOptionsSetMaxSingleMemAlloc(options.opts, tmsize_t{1} << 30);  // libtiff's own buffers
  TiffHandle handle;
  handle.tif = TIFFClientOpenExt("image", "r", &src, tiff_read, tiff_write, tiff_seek, tiff_close, tiff_size,
                                 tiff_map, tiff_unmap, options.opts);
  if (!handle.tif) fail(src, "cannot read the header");
  TIFF* tif = handle.tif;
  if (std::strstr(src.warning, "IO error")) {  // a tag's data lies past the end
    std::snprintf(src.message, sizeof src.message, "%s", src.warning);
    src.short_read = true;
    fail(src, "reading the directory");
  }
  const Tags tags = read_tags(tif);
  check_dimensions(tags.width, tags.height, "TIFF");
  Layout layout;
  if (!classify(tags, layout)) throw Error("unsupported TIFF layout (" + describe(tags) + ")");
  uint16_t orientation = ORIENTATION_TOPLEFT;
  TIFFGetFieldDefaulted(tif, TIFFTAG_ORIENTATION, &orientation);
  if (layout.kind == Kind::kYcbcrRgba) return orient(read_rgba(tif, src, tags), orientation);
  if (tags.photometric == PHOTOMETRIC_YCBCR && !TIFFSetField(tif, TIFFTAG_JPEGCOLORMODE, JPEGCOLORMODE_RGB))
    fail(src, "cannot ask libjpeg for RGB");

  std::vector<uint8_t> colours;
  if (layout.kind == Kind::kPalette || layout.kind == Kind::kPaletteAlpha) {
    uint16_t *red = nullptr, *green = nullptr, *blue = nullptr;
    if (!TIFFGetField(tif, TIFFTAG_COLORMAP, &red, &green, &blue)) fail(src, "palette image without a colour map");
    for (int i = 0; i < (1 << tags.bits); ++i)  // PIL keeps the high byte of each 16-bit entry
      colours.insert(colours.end(), {uint8_t(red[i] >> 8), uint8_t(green[i] >> 8), uint8_t(blue[i] >> 8)});
  }
  const Palette palette(colours.data(), static_cast<int>(colours.size() / 3));
  return orient(read_samples(tif, src, tags, layout, &palette), orientation);
}

}  // namespace llava::image_detail
