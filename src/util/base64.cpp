#include "llava/base64.h"

#include <array>

namespace llava {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::array<int8_t, 256> make_decode_table() {
  std::array<int8_t, 256> t{};
  t.fill(-1);
  for (int i = 0; i < 64; ++i) t[static_cast<uint8_t>(kAlphabet[i])] = static_cast<int8_t>(i);
  return t;
}

}  // namespace

bool base64_decode(std::string_view text, std::vector<uint8_t>& out) {
  static const std::array<int8_t, 256> table = make_decode_table();
  out.clear();
  if (text.rfind("data:", 0) == 0) {
    size_t comma = text.find(',');
    if (comma == std::string_view::npos || text.substr(0, comma).find(";base64") == std::string_view::npos)
      return false;
    text.remove_prefix(comma + 1);
  }
  // Written through a raw pointer (no push_back per byte); a quantum of 4 alphabet characters is
  // decoded in one step, anything else (whitespace, padding, bad characters) one character at a time.
  out.resize(text.size() / 4 * 3 + 3);
  uint8_t* o = out.data();
  size_t n = 0, sextets = 0;
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t size = text.size();
  uint32_t acc = 0;
  int bits = 0, padding = 0;
  size_t i = 0;
  while (i < size) {
    if (bits == 0 && padding == 0) {  // at a quantum boundary
      for (; i + 4 <= size; i += 4) {
        const int a = table[p[i]], b = table[p[i + 1]], c = table[p[i + 2]], d = table[p[i + 3]];
        if ((a | b | c | d) < 0) break;
        const uint32_t v = static_cast<uint32_t>(a) << 18 | static_cast<uint32_t>(b) << 12 |
                           static_cast<uint32_t>(c) << 6 | static_cast<uint32_t>(d);
        o[n] = static_cast<uint8_t>(v >> 16);
        o[n + 1] = static_cast<uint8_t>(v >> 8);
        o[n + 2] = static_cast<uint8_t>(v);
        n += 3;
        sextets += 4;
      }
      if (i == size) break;
    }
    const uint8_t c = p[i++];
    if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    if (c == '=') {
      ++padding;
      continue;
    }
    if (padding > 0 || table[c] < 0) {  // data after padding, or a foreign character
      out.clear();
      return false;
    }
    acc = (acc << 6) | static_cast<uint32_t>(table[c]);
    bits += 6;
    ++sextets;
    if (bits >= 8) {
      bits -= 8;
      o[n++] = static_cast<uint8_t>((acc >> bits) & 0xFF);
    }
  }
  out.resize(n);
  if (sextets == 0 || padding > 2) return false;
  if (sextets % 4 == 1) return false;                               // 6 leftover bits cannot be a byte
  if (padding > 0 && (sextets + padding) % 4 != 0) return false;    // padding must complete a quantum
  return true;
}

std::string base64_encode(const uint8_t* data, size_t size) {
  std::string out;
  out.reserve((size + 2) / 3 * 4);
  for (size_t i = 0; i < size; i += 3) {
    uint32_t n = static_cast<uint32_t>(data[i]) << 16;
    if (i + 1 < size) n |= static_cast<uint32_t>(data[i + 1]) << 8;
    if (i + 2 < size) n |= data[i + 2];
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += i + 1 < size ? kAlphabet[(n >> 6) & 63] : '=';
    out += i + 2 < size ? kAlphabet[n & 63] : '=';
  }
  return out;
}

}  // namespace llava
