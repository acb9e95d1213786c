#pragma once
// Image bytes -> RGB -> CLIP / SigLIP preprocessing, exactly as HF's CLIPImageProcessor and
// SiglipImageProcessor (+ LLaVA's "pad") compute it. No torch here: the loader turns PixelTensor into
// tensors when it collates.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace llava {

struct RgbImage {
  int width = 0, height = 0;
  std::vector<uint8_t> pixels;  // HWC, RGB, row-major
};

struct ImageProcessorConfig {
  int shortest_edge = 336;  // resize target of the shorter side
  // size {"height", "width"} (SiglipImageProcessor; CLIP's accepts it too): resize to exactly this, aspect
  // ratio not kept. 0 = resize the shorter side to shortest_edge.
  int resize_height = 0, resize_width = 0;
  int crop_height = 336, crop_width = 336;
  bool do_resize = true, do_center_crop = true, do_rescale = true, do_normalize = true;
  double rescale_factor = 1.0 / 255.0;
  std::array<float, 3> mean = {0.48145466f, 0.4578275f, 0.40821073f};
  std::array<float, 3> std = {0.26862954f, 0.26130258f, 0.27577711f};

  // preprocessor_config.json (CLIPImageProcessor or SiglipImageProcessor, by image_processor_type; absent
  // keys take that processor's defaults); throws llava::Error naming the file.
  static ImageProcessorConfig from_json_file(const std::string& path);
  // CLIP defaults for a given image size (when there is no preprocessor_config.json).
  static ImageProcessorConfig clip_defaults(int image_size);
  // SiglipImageProcessor's: exact image_size x image_size resize, no crop, mean = std = 0.5.
  static ImageProcessorConfig siglip_defaults(int image_size);
  // LLaVA's expand2square background: tuple(int(x * 255) for x in mean).
  std::array<uint8_t, 3> pad_background() const;
};

// PIL's decompression-bomb limit: Image.open raises DecompressionBombError above 2 * MAX_IMAGE_PIXELS
// (2 * 89478485) pixels. Checked from the header, before any pixel buffer is allocated.
constexpr long long kMaxImagePixels = 178956970;

// Encoded bytes -> RGB exactly as PIL's Image.open(...).convert("RGB") gives them (Pillow 9.4, what
// LLaVA reads every image with). The format comes from the leading bytes, never from a file name:
// JPEG (TurboJPEG), PNG (libpng), GIF (giflib, first frame), WebP (libwebp, first frame), TIFF (libtiff,
// first page), PNM (PIL's rules, own parser), BMP/TGA/PSD (stb_image). As convert("RGB") does: alpha is dropped, never composited;
// palettes are looked up (tRNS ignored); grey is replicated; 16-bit samples keep their high byte, except
// 16-bit grey, which PIL clips to 255; CMYK uses PIL's cmyk2rgb (JPEG CMYK/YCCK read Adobe-inverted);
// EXIF orientation is not applied, the TIFF Orientation tag is (as Pillow). min_short_side > 0 lets JPEG
// decode at a DCT-scaled size whose shorter side stays >= 2 * min_short_side (only for images far larger
// than the target; not PIL-exact).
// Throws llava::Error ("not an image", "truncated PNG", "image too large", ...) on bad bytes; never
// crashes on arbitrary input, never puts input bytes in a message.
RgbImage decode_image(const uint8_t* data, size_t size, int min_short_side = 0);

// The whole content of a regular file. Throws llava::Error naming the file and why: missing, unreadable,
// a directory, a FIFO/device/socket (opened non-blocking and rejected, so a FIFO cannot hang), empty.
std::vector<uint8_t> read_image_file(const std::string& path);
// read_image_file + decode_image; errors say "image file 'PATH': reason".
RgbImage load_image_file(const std::string& path, int min_short_side = 0);

// PIL Image.resize(size, BICUBIC) with antialiasing (support scaled by the downscale factor, a = -0.5),
// rounded to uint8.
RgbImage resize_bicubic(const RgbImage& image, int width, int height);
// LLaVA's expand2square: square canvas of the longer side filled with background, image pasted at
// ((side - w) / 2, (side - h) / 2).
RgbImage expand_to_square(const RgbImage& image, std::array<uint8_t, 3> background);
RgbImage center_crop(const RgbImage& image, int width, int height);

struct PixelTensor {
  int channels = 3, height = 0, width = 0;
  std::vector<float> data;  // CHW float32; [tiles, C, H, W] when tiles > 1
  int tiles = 1;            // > 1 only for anyres (include/llava/anyres.h): base tile + crops of one image
};

// Full pipeline: [pad] -> resize (shortest edge, or exact {height, width}) -> center crop -> rescale ->
// normalize.
// Rescale/normalize in float32 exactly as the fixtures' README, item 5, says.
PixelTensor clip_preprocess(const RgbImage& image, const ImageProcessorConfig& config, bool pad_to_square);

}  // namespace llava
