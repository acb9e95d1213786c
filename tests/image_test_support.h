#pragma once
// Encoders for image tests, each through the library that writes the format (TurboJPEG, libwebp, giflib,
// libtiff, stb_image_write), so tests and fuzz seeds need neither fixtures nor Python.
#include <gif_lib.h>
#include <stb_image_write.h>
#include <tiffio.h>
#include <turbojpeg.h>
#include <unistd.h>
#include <webp/encode.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

namespace llava::testing {

// Smooth ramps with a hard edge: width x height x channels bytes.
inline std::vector<uint8_t> test_pixels(int w, int h, int channels, int seed = 0) {
  std::vector<uint8_t> px(static_cast<size_t>(w) * h * channels);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < channels; ++c)
        px[(static_cast<size_t>(y) * w + x) * channels + c] =
            static_cast<uint8_t>(x * 255 / std::max(w - 1, 1) * (c + 1) + y * 9 + seed * 31 + ((x > w / 2) != (y > h / 3)) * 120);
  return px;
}

inline std::vector<uint8_t> encode_jpeg(const std::vector<uint8_t>& px, int w, int h, int pixel_format, int subsamp,
                                        int quality = 90) {
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  std::vector<uint8_t> out;
  if (tjCompress2(tj, px.data(), w, 0, h, pixel_format, &buf, &size, subsamp, quality, 0) == 0) out.assign(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

// RGBA (channels 4) or RGB (3); lossless keeps every value (also under alpha 0: exact mode).
inline std::vector<uint8_t> encode_webp(const std::vector<uint8_t>& px, int w, int h, int channels, bool lossless) {
  WebPConfig config;
  WebPConfigInit(&config);
  config.lossless = lossless;
  config.exact = 1;
  config.quality = lossless ? 50 : 80;
  WebPPicture pic;
  WebPPictureInit(&pic);
  pic.use_argb = 1;
  pic.width = w;
  pic.height = h;
  if (channels == 4) WebPPictureImportRGBA(&pic, px.data(), w * 4);
  else WebPPictureImportRGB(&pic, px.data(), w * 3);
  WebPMemoryWriter writer;
  WebPMemoryWriterInit(&writer);
  pic.writer = WebPMemoryWrite;
  pic.custom_ptr = &writer;
  std::vector<uint8_t> out;
  if (WebPEncode(&config, &pic)) out.assign(writer.mem, writer.mem + writer.size);
  WebPMemoryWriterClear(&writer);
  WebPPictureFree(&pic);
  return out;
}

// One frame of palette indices, the palette (RGB triples, 2^k entries) as the global colour table.
inline std::vector<uint8_t> encode_gif(const std::vector<uint8_t>& indices, int w, int h,
                                       const std::vector<uint8_t>& palette, int transparent = -1) {
  std::vector<uint8_t> out;
  auto sink = [](GifFileType* gif, const GifByteType* data, int n) {
    auto* o = static_cast<std::vector<uint8_t>*>(gif->UserData);
    o->insert(o->end(), data, data + n);
    return n;
  };
  int error = 0;
  GifFileType* gif = EGifOpen(&out, sink, &error);
  const int entries = static_cast<int>(palette.size() / 3);
  ColorMapObject* map = GifMakeMapObject(entries, reinterpret_cast<const GifColorType*>(palette.data()));
  EGifPutScreenDesc(gif, w, h, 8, 0, map);
  if (transparent >= 0) {
    GraphicsControlBlock gcb{DISPOSAL_UNSPECIFIED, false, 0, transparent};
    GifByteType ext[4];
    EGifGCBToExtension(&gcb, ext);
    EGifPutExtension(gif, GRAPHICS_EXT_FUNC_CODE, 4, ext);
  }
  EGifPutImageDesc(gif, 0, 0, w, h, false, nullptr);
  for (int y = 0; y < h; ++y) EGifPutLine(gif, const_cast<GifPixelType*>(&indices[static_cast<size_t>(y) * w]), w);
  EGifCloseFile(gif, &error);
  GifFreeMapObject(map);
  return out;
}

// A TIFF written by libtiff: `set_tags` sets everything but the image size; `rows` are the encoded rows
// (already packed for the bit depth), written as one strip per `rows_per_strip` rows.
inline std::vector<uint8_t> encode_tiff(int w, int h, const std::vector<std::vector<uint8_t>>& rows,
                                        const std::function<void(TIFF*)>& set_tags, int rows_per_strip = 8) {
  char path[] = "/tmp/llava_test_tiff_XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return {};
  ::close(fd);
  TIFF* tif = TIFFOpen(path, "w");
  TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, w);
  TIFFSetField(tif, TIFFTAG_IMAGELENGTH, h);
  TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, rows_per_strip);
  set_tags(tif);
  for (int y = 0; y < h; ++y) TIFFWriteScanline(tif, const_cast<uint8_t*>(rows[y].data()), y, 0);
  TIFFClose(tif);
  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(path);
  return out;
}

inline std::vector<uint8_t> encode_bmp(const std::vector<uint8_t>& px, int w, int h, int channels) {
  std::vector<uint8_t> out;
  stbi_write_bmp_to_func([](void* ctx, void* data, int size) {
        auto* o = static_cast<std::vector<uint8_t>*>(ctx);
        o->insert(o->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
      }, &out, w, h, channels, px.data());
  return out;
}

}  // namespace llava::testing
