// GIF through giflib: the first frame as PIL 9.4's GifImagePlugin gives it, then convert("RGB"). The
// canvas is the logical screen, grown to hold the frame if the frame sticks out; pixels outside the frame
// are the frame's transparent index if its graphic control block names one, else index 0; every index,
// the transparent one included, is looked up in the frame's colour table (local, else global) through
// PIL's 256-entry palette (a file without any table is greyscale: value = index).
// stb_image composites onto transparent black instead, hence giflib.
#include <gif_lib.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "decoders.h"
#include "llava/error.h"

namespace llava::image_detail {
namespace {

struct GifSource {
  const uint8_t* data;
  size_t size, pos;
  bool short_read;  // giflib asked for bytes past the end: whatever it reports, the file is cut off
};

int read_bytes(GifFileType* gif, GifByteType* out, int n) {
  auto* src = static_cast<GifSource*>(gif->UserData);
  const size_t want = static_cast<size_t>(n < 0 ? 0 : n), take = std::min(want, src->size - src->pos);
  std::memcpy(out, src->data + src->pos, take);
  src->pos += take;
  src->short_read = src->short_read || take < want;
  return static_cast<int>(take);
}

struct GifGuard {
  GifFileType* gif = nullptr;
  ~GifGuard() {
    int ignored = 0;
    if (gif) DGifCloseFile(gif, &ignored);
  }
};

[[noreturn]] void fail(int code, const GifSource& src) {
  const std::string reason = printable(GifErrorString(code));
  if (src.short_read || code == D_GIF_ERR_EOF_TOO_SOON) throw Error("truncated GIF (" + reason + ")");
  throw Error("bad GIF (" + reason + ")");
}

// The transparent index after one extension record: a graphic control block with its transparency flag
// sets it (one without the flag leaves it, as in PIL); other extensions are skipped.
int read_extension(GifFileType* gif, const GifSource& src, int transparent) {
  int code = 0;
  GifByteType* block = nullptr;
  if (DGifGetExtension(gif, &code, &block) == GIF_ERROR) fail(gif->Error, src);
  // block[0] is the sub-block length: flags, delay (2 bytes), transparent index.
  if (code == GRAPHICS_EXT_FUNC_CODE && block && block[0] >= 4 && (block[1] & 1)) transparent = block[4];
  while (block)
    if (DGifGetExtensionNext(gif, &block) == GIF_ERROR) fail(gif->Error, src);
  return transparent;
}

// Row y of the frame, in the order an interlaced GIF stores them (passes from rows 0, 4, 2, 1).
int interlaced_row(int k, int height) {
  static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
  for (int pass = 0; pass < 4; ++pass) {
    const int rows = start[pass] < height ? (height - start[pass] + step[pass] - 1) / step[pass] : 0;
    if (k < rows) return start[pass] + k * step[pass];
    k -= rows;
  }
  return -1;
}

}  // namespace

RgbImage decode_gif(const uint8_t* data, size_t size) {
  GifSource src{data, size, 0, false};
  GifGuard guard;
  int error = 0;
  guard.gif = DGifOpen(&src, read_bytes, &error);
  if (!guard.gif) fail(error, src);
  GifFileType* gif = guard.gif;

  int transparent = -1;
  for (;;) {
    GifRecordType record = UNDEFINED_RECORD_TYPE;
    if (DGifGetRecordType(gif, &record) == GIF_ERROR) fail(gif->Error, src);
    if (record == TERMINATE_RECORD_TYPE) throw Error("bad GIF (no image in the file)");
    if (record == EXTENSION_RECORD_TYPE) transparent = read_extension(gif, src, transparent);
    if (record == IMAGE_DESC_RECORD_TYPE) break;
  }
  if (DGifGetImageDesc(gif) == GIF_ERROR) fail(gif->Error, src);
  const GifImageDesc& frame = gif->Image;
  const long long width = std::max<long long>(gif->SWidth, frame.Left + frame.Width);
  const long long height = std::max<long long>(gif->SHeight, frame.Top + frame.Height);
  check_dimensions(width, height, "GIF");  // the canvas holds the frame, so this bounds the frame too

  std::vector<uint8_t> indices(static_cast<size_t>(width) * height, static_cast<uint8_t>(transparent < 0 ? 0 : transparent));
  for (int k = 0; k < frame.Height; ++k) {
    const int y = frame.Interlace ? interlaced_row(k, frame.Height) : k;
    uint8_t* row = &indices[static_cast<size_t>(frame.Top + y) * width + frame.Left];
    if (frame.Width > 0 && DGifGetLine(gif, row, frame.Width) == GIF_ERROR) fail(gif->Error, src);
  }

  const ColorMapObject* map = frame.ColorMap ? frame.ColorMap : gif->SColorMap;
  std::vector<uint8_t> colours;
  for (int i = 0; map && i < map->ColorCount && i < 256; ++i)
    colours.insert(colours.end(), {map->Colors[i].Red, map->Colors[i].Green, map->Colors[i].Blue});
  const Palette palette(colours.data(), static_cast<int>(colours.size() / 3));
  RgbImage out;
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.pixels.resize(indices.size() * 3);
  for (size_t i = 0; i < indices.size(); ++i) std::memcpy(&out.pixels[3 * i], palette.rgb + 3 * indices[i], 3);
  return out;
}

}  // namespace llava::image_detail
