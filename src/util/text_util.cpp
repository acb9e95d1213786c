#include "llava/text_util.h"

#include <cstdint>

namespace llava {
namespace {

// Decodes one UTF-8 code point at text[i]; returns its byte length (1 for invalid bytes).
size_t utf8_at(const std::string& text, size_t i, uint32_t& cp) {
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

int python_word_count(const std::string& text) {
  int words = 0;
  bool in_word = false;
  for (size_t i = 0; i < text.size();) {
    uint32_t cp;
    i += utf8_at(text, i, cp);
    bool space = python_isspace(cp);
    if (!space && !in_word) ++words;
    in_word = !space;
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

std::string line_column(const std::string& text, size_t offset) {
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

}  // namespace llava
