#include "split_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "llava/error.h"

namespace llava {
namespace {

// Unicode White_Space (PropList.txt) as character-class content.
const std::string kWhiteSpace =
    "\\x{9}-\\x{D}\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof buf) < 0) return "PCRE2 error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

std::string with_white_space_property(const std::string& pattern) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char e = pattern[++i];
      if (e == 's')
        out += in_class ? kWhiteSpace : "[" + kWhiteSpace + "]";
      else if (e == 'S' && !in_class)
        out += "[^" + kWhiteSpace + "]";
      else
        out.append({c, e});  // any other escape, \S inside a class included (PCRE2's own, kept)
      continue;
    }
    out += c;
    if (!in_class && c == '[') {
      in_class = true;
      // "[]...]" and "[^]...]": that first ']' is a literal
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
    } else if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {
      const size_t end = pattern.find(":]", i + 2);  // a POSIX class [:alpha:] inside the class
      if (end != std::string::npos) {
        out.append(pattern, i + 1, end + 2 - (i + 1));
        i = end + 1;
      }
    } else if (in_class && c == ']') {
      in_class = false;
    }
  }
  return out;
}

SplitRegex::SplitRegex(const std::string& pattern, const std::string& where) {
  const std::string rewritten = with_white_space_property(pattern);
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(rewritten.data()), rewritten.size(),
                                   PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  if (!code)
    throw Error("tokenizer: " + where + ": pre-tokenizer regex does not compile (" + pcre2_message(error) +
                " at offset " + std::to_string(offset) + ")");
  code_.reset(code, pcre2_code_free);
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // without JIT support pcre2_match interprets: slower, same result
}

void SplitRegex::split(std::string_view text, std::vector<std::pair<size_t, size_t>>* pieces) const {
  pieces->clear();
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(code_.get(), nullptr), &pcre2_match_data_free);
  if (!match) throw Error("tokenizer: out of memory for the pre-tokenizer regex");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t done = 0;  // text[0, done) is in pieces
  for (size_t start = 0; start <= text.size();) {
    const int rc = pcre2_match(code_.get(), subject, text.size(), start, PCRE2_NO_UTF_CHECK, match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error("tokenizer: pre-tokenizer regex failed: " + pcre2_message(rc));
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (begin > done) pieces->emplace_back(done, begin);
    if (end > begin) {
      pieces->emplace_back(begin, end);
      done = end;
      start = end;
    } else {  // an empty match: step over one character
      start = end + 1;
      while (start < text.size() && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) ++start;
      done = begin;
    }
  }
  if (done < text.size()) pieces->emplace_back(done, text.size());
}

}  // namespace llava
