#include "llava/text_util.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace llava {
namespace {

// Decodes one UTF-8 code point at text[i]; returns its byte length (1 for invalid bytes).
size_t utf8_at(std::string_view text, size_t i, uint32_t& cp) {
  auto c = static_cast<uint8_t>(text[i]);
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (i + len > text.size()) len = 1;
  cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(text[i + k]) & 0x3f);
  return len;
}

// Python's str.isspace() for one code point.
bool python_isspace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
         cp == 0x3000;
}

// Python's str.isspace() for an ASCII byte: \t \n \v \f \r, the separators 0x1c-0x1f, space.
inline bool ascii_space(uint8_t c) { return static_cast<uint8_t>(c - 0x09) < 5 || static_cast<uint8_t>(c - 0x1c) < 5; }

int popcount64(uint64_t x) {  // without -mpopcnt, __builtin_popcountll is a library call
  x -= (x >> 1) & 0x5555555555555555ull;
  x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
  x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
  return static_cast<int>((x * 0x0101010101010101ull) >> 56);
}

// Bit k set when byte k of the 64-byte block is an ASCII space; false when the block has a byte >= 0x80.
bool ascii_space_mask(const uint8_t* p, uint64_t& mask) {
#if defined(__SSE2__)
  mask = 0;
  for (int k = 0; k < 64; k += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k));
    if (_mm_movemask_epi8(v) != 0) return false;
    const __m128i tab_to_cr = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8(0x08)), _mm_cmplt_epi8(v, _mm_set1_epi8(0x0e)));
    const __m128i fs_to_space = _mm_and_si128(_mm_cmpgt_epi8(v, _mm_set1_epi8(0x1b)), _mm_cmplt_epi8(v, _mm_set1_epi8(0x21)));
    mask |= static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(_mm_or_si128(tab_to_cr, fs_to_space)))) << k;
  }
  return true;
#else
  mask = 0;
  for (int k = 0; k < 64; ++k) {
    if (p[k] >= 0x80) return false;
    mask |= static_cast<uint64_t>(ascii_space(p[k])) << k;
  }
  return true;
#endif
}

}  // namespace

std::string python_strip(const std::string& text) {
  size_t begin = 0, end = text.size();
  while (begin < end) {
    uint32_t cp;
    size_t len = utf8_at(text, begin, cp);
    if (!python_isspace(cp)) break;
    begin += len;
  }
  while (end > begin) {
    size_t start = end - 1;  // back up to the first byte of the last code point
    while (start > begin && (static_cast<uint8_t>(text[start]) & 0xc0) == 0x80) --start;
    uint32_t cp;
    utf8_at(text, start, cp);
    if (!python_isspace(cp)) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

std::string python_lstrip_chars(const std::string& text, const std::string& chars) {
  size_t i = 0;
  while (i < text.size() && chars.find(text[i]) != std::string::npos) ++i;
  return text.substr(i);
}

int python_word_count(std::string_view text) {
  // 64-byte blocks of ASCII (almost all of LLaVA's text) as bit masks: a word starts at a non-space whose
  // predecessor is a space. The last partial block is padded with spaces (they start no word). A block with
  // a byte >= 0x80 goes code point by code point through Python's full whitespace set.
  const auto* p = reinterpret_cast<const uint8_t*>(text.data());
  const size_t n = text.size();
  int words = 0;
  bool after_space = true;
  for (size_t i = 0; i < n;) {
    uint8_t tail[64];
    const uint8_t* block = p + i;
    if (i + 64 > n) {
      std::memset(tail, ' ', sizeof tail);
      std::memcpy(tail, p + i, n - i);
      block = tail;
    }
    uint64_t space;
    if (ascii_space_mask(block, space)) {
      words += popcount64(~space & ((space << 1) | static_cast<uint64_t>(after_space)));
      after_space = space >> 63;
      i += 64;
      continue;
    }
    for (const size_t end = std::min(n, i + 64); i < end;) {  // may run past `end` to finish a code point
      uint32_t cp;
      i += utf8_at(text, i, cp);
      const bool is_space = python_isspace(cp);
      words += after_space && !is_space;
      after_space = is_space;
    }
  }
  return words;
}

std::vector<std::string> python_split(const std::string& text, const std::string& sep) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t pos; (pos = text.find(sep, start)) != std::string::npos; start = pos + sep.size())
    parts.push_back(text.substr(start, pos - start));
  parts.push_back(text.substr(start));
  return parts;
}

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
  return s;
}

std::string line_column(std::string_view text, size_t offset) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < offset && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

namespace {

// Length of the valid UTF-8 sequence at s[i] (1-4), 0 when the bytes there are not one (overlong forms,
// surrogates and code points above U+10FFFF are invalid, as Python's decoder says).
size_t utf8_sequence(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? (c <= 0xEF ? 3 : 0) : c >= 0xC2 ? 2 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k)
    if ((b(i + k) & 0xC0) != 0x80) return 0;
  if (n == 3 && ((c == 0xE0 && b(i + 1) < 0xA0) || (c == 0xED && b(i + 1) >= 0xA0))) return 0;
  if (n == 4 && ((c == 0xF0 && b(i + 1) < 0x90) || (c == 0xF4 && b(i + 1) >= 0x90))) return 0;
  return n;
}

}  // namespace

std::string printable(const std::string& text) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t n = utf8_sequence(text, i);
    if (n > 0 && !(c < 0x20 && c != '\n' && c != '\t') && c != 0x7F) {
      out.append(text, i, n);
      i += n;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
      ++i;
    }
  }
  return out;
}

}  // namespace llava
