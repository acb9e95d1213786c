#include "unicode_bytes.h"

#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <memory>

#include "llava/error.h"

namespace llava::unicode {
namespace {

// Length of the well-formed prefix of the UTF-8 sequence starting at s[0] (Unicode Table 3-7), and whether
// it is a complete character. An invalid lead byte gives (1, false): one U+FFFD per maximal subpart.
size_t utf8_prefix(const unsigned char* s, size_t n, bool* complete) {
  const unsigned char b = s[0];
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b < 0x80) {
    *complete = true;
    return 1;
  } else if (b >= 0xC2 && b <= 0xDF) {
    need = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    need = 3;
    if (b == 0xE0) lo = 0xA0;
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 4;
    if (b == 0xF0) lo = 0x90;
    if (b == 0xF4) hi = 0x8F;  // <= U+10FFFF
  } else {
    *complete = false;
    return 1;
  }
  size_t len = 1;
  for (; len < need && len < n; ++len) {
    const unsigned char c = s[len];
    if (len == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) break;
  }
  *complete = len == need;
  return len;
}

// bytes_to_unicode(): printable bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') keep their code point, the other 68
// get 256, 257, ... in byte order.
struct Alphabet {
  std::array<uint32_t, 256> code_point{};
  std::array<int16_t, 256 + 68> byte_of{};  // code point -> byte, -1 outside the alphabet
  Alphabet() {
    byte_of.fill(-1);
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      code_point[b] = printable ? static_cast<uint32_t>(b) : next++;
      byte_of[code_point[b]] = static_cast<int16_t>(b);
    }
  }
};

const Alphabet& alphabet() {
  static const Alphabet a;
  return a;
}

void append_utf8(uint32_t cp, std::string* out) {
  utf8proc_uint8_t buf[4];
  const auto n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

}  // namespace

size_t invalid_utf8_offset(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    bool complete;
    const size_t len = utf8_prefix(s + i, text.size() - i, &complete);
    if (!complete) return i;
    i += len;
  }
  return std::string::npos;
}

std::string utf8_replace_invalid(std::string_view bytes) {
  static const char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    bool complete;
    const size_t len = utf8_prefix(s + i, bytes.size() - i, &complete);
    if (complete)
      out.append(bytes.data() + i, len);
    else
      out += kReplacement;
    i += len;
  }
  return out;
}

std::string nfc(std::string_view text) {
  utf8proc_uint8_t* result = nullptr;
  // No UTF8PROC_NULLTERM: the length is given, so a NUL is an ordinary character.
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          static_cast<utf8proc_ssize_t>(text.size()), &result,
                                          static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) throw Error(std::string("tokenizer: NFC normalization failed: ") + utf8proc_errmsg(n));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(result, &std::free);
  return std::string(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
}

uint32_t byte_to_code_point(uint8_t byte) { return alphabet().code_point[byte]; }

bool byte_level_to_bytes(std::string_view piece, std::string* bytes) {
  const Alphabet& a = alphabet();
  bytes->clear();
  const auto* s = reinterpret_cast<const utf8proc_uint8_t*>(piece.data());
  for (size_t i = 0; i < piece.size();) {
    utf8proc_int32_t cp;
    const auto len = utf8proc_iterate(s + i, static_cast<utf8proc_ssize_t>(piece.size() - i), &cp);
    if (len <= 0 || cp < 0 || static_cast<size_t>(cp) >= a.byte_of.size() || a.byte_of[cp] < 0) return false;
    bytes->push_back(static_cast<char>(a.byte_of[cp]));
    i += static_cast<size_t>(len);
  }
  return true;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) append_utf8(byte_to_code_point(b), &out);
  return out;
}

}  // namespace llava::unicode
