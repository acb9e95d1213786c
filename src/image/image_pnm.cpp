// PBM / PGM / PPM (P1..P6) as PIL 9.4's PpmImagePlugin reads them, then convert("RGB"). No Debian library
// reproduces PIL's rules, and the format is a header of decimal tokens and raw or decimal samples:
//   P4 / P1 bitmaps: 1 is black; P5 / P6 with maxval 255: the bytes; P5 with maxval 65535: 16-bit grey,
//   clipped to 255 (mode "I"); any other maxval: round(v / maxval * M) with Python's round (ties to
//   even), M = 65535 for grey above 255 (mode "I", then clipped to 255), else 255; plain P2 / P3 the same.
// stb_image reads only P5 / P6, scales 16-bit samples differently and reads past a cut-off file.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "decoders.h"
#include "llava/error.h"

namespace llava::image_detail {
namespace {

bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }

// PIL's _read_token: skip whitespace and '#' comments (to CR or LF), then up to 10 characters; the one
// whitespace byte that ends the token is consumed too.
long long read_token(const uint8_t* d, size_t size, size_t& pos) {
  std::string token;
  while (pos < size) {
    const uint8_t c = d[pos++];
    if (is_space(c)) {
      if (token.empty()) continue;
      break;
    }
    if (c == '#') {
      while (pos < size && d[pos] != '\r' && d[pos] != '\n') ++pos;
      if (pos < size) ++pos;
      continue;
    }
    token += static_cast<char>(c);
    if (token.size() > 10) throw Error("bad PNM (a header token is longer than 10 characters)");
  }
  if (token.empty()) throw Error("truncated PNM (the header ends early)");
  for (char c : token)
    if (c < '0' || c > '9') throw Error("bad PNM (a header field is not a number)");
  return std::stoll(token);
}

// The samples of the plain formats: decimal tokens, '#' comments to the end of the line.
std::vector<uint16_t> plain_values(const uint8_t* d, size_t size, size_t pos, size_t wanted, bool bitmap,
                                   long long maxval) {
  std::vector<uint16_t> values;
  std::string token;
  auto flush = [&] {
    if (token.empty()) return;
    if (token.size() > 10) throw Error("bad PNM (a sample token is longer than 10 characters)");
    for (char c : token)
      if (c < '0' || c > '9') throw Error("bad PNM (a sample is not a number)");
    const long long v = std::stoll(token);
    if (v > maxval) throw Error("bad PNM (a sample is larger than maxval)");
    values.push_back(static_cast<uint16_t>(v));
    token.clear();
  };
  for (; pos < size && values.size() < wanted; ++pos) {
    const uint8_t c = d[pos];
    if (c == '#') {
      flush();
      while (pos + 1 < size && d[pos + 1] != '\r' && d[pos + 1] != '\n') ++pos;
    } else if (is_space(c)) {
      flush();
    } else if (bitmap) {  // P1: every digit is a sample, spaces optional
      if (c != '0' && c != '1') throw Error("bad PNM (a P1 sample is not 0 or 1)");
      values.push_back(c - '0');
    } else {
      token += static_cast<char>(c);
    }
  }
  if (values.size() < wanted) flush();
  if (values.size() < wanted) throw Error("truncated PNM (fewer samples than the header declares)");
  return values;
}

}  // namespace

RgbImage decode_pnm(const uint8_t* data, size_t size) {
  const int kind = data[1] - '0';  // 1..6: sniffed by decode_image
  size_t pos = 2;
  if (pos < size && !is_space(data[pos])) throw Error("unsupported PNM variant (not P1..P6)");
  const bool bitmap = kind == 1 || kind == 4, plain = kind <= 3;
  const int bands = kind == 3 || kind == 6 ? 3 : 1;
  const long long width = read_token(data, size, pos), height = read_token(data, size, pos);
  const long long maxval = bitmap ? 1 : read_token(data, size, pos);
  if (maxval <= 0 || maxval >= 65536) throw Error("bad PNM (maxval must be in 1..65535)");
  check_dimensions(width, height, "PNM");
  const size_t n = static_cast<size_t>(width) * height;

  // A sample's value after convert("RGB"). Raw samples above maxval are clamped (PIL's PpmDecoder), plain
  // ones are errors (PpmPlainDecoder).
  const bool mode_i = bands == 1 && !bitmap && maxval > 255;  // PIL's mode "I": 0..65535, then clipped
  const double out_max = mode_i ? 65535.0 : 255.0;
  auto scaled = [&](long long v) -> uint8_t {
    if (bitmap) return v ? 0 : 255;
    if (maxval == 255) return static_cast<uint8_t>(std::min(v, 255LL));
    if (maxval == 65535 && mode_i && !plain) return static_cast<uint8_t>(std::min(v, 255LL));  // raw "I;16B"
    const double r = std::nearbyint(static_cast<double>(v) / static_cast<double>(maxval) * out_max);
    return static_cast<uint8_t>(std::min(r, 255.0));
  };

  RgbImage out;
  out.width = static_cast<int>(width);
  out.height = static_cast<int>(height);
  out.pixels.resize(n * 3);
  auto put = [&](size_t i, long long v) {  // sample i of n * bands
    const uint8_t u = scaled(v);
    if (bands == 3) out.pixels[i] = u;
    else out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = u;
  };
  if (plain) {
    const std::vector<uint16_t> values = plain_values(data, size, pos, n * bands, kind == 1, maxval);
    for (size_t i = 0; i < values.size(); ++i) put(i, values[i]);
    return out;
  }
  const size_t bytes = maxval < 256 ? 1 : 2, row_bits = static_cast<size_t>(width + 7) / 8;
  const size_t needed = kind == 4 ? row_bits * height : n * bands * bytes;
  if (size - pos < needed)
    throw Error("truncated PNM (the samples need " + std::to_string(needed) + " bytes, " +
                std::to_string(size - pos) + " follow the header)");
  const uint8_t* p = data + pos;
  for (size_t i = 0; i < n * bands; ++i) {
    if (kind == 4) put(i, (p[(i / width) * row_bits + (i % width) / 8] >> (7 - (i % width) % 8)) & 1);
    else put(i, bytes == 1 ? p[i] : (p[2 * i] << 8 | p[2 * i + 1]));
  }
  return out;
}

}  // namespace llava::image_detail
