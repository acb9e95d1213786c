#pragma once
// The pre-tokenizer regex of a tokenizer.json "Split" (Oniguruma in HF tokenizers), over PCRE2 with UTF, UCP
// (\p{L}, \p{N}, Unicode \s) and JIT.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace llava {

class SplitRegex {
 public:
  // where: the file, for the error message when the pattern does not compile.
  SplitRegex(const std::string& pattern, const std::string& where);

  // HF's Split with behavior "Isolated": the matches and the text between them, in order, as
  // (begin, end) byte offsets that cover all of text. text must be valid UTF-8 (checked by the caller).
  void split(std::string_view text, std::vector<std::pair<size_t, size_t>>* pieces) const;

 private:
  std::shared_ptr<pcre2_real_code_8> code_;
};

// The pattern with \s and \S spelled out as Unicode White_Space (the \s of Oniguruma and Rust's regex);
// PCRE2's UCP \s also matches U+180E MONGOLIAN VOWEL SEPARATOR, which is not White_Space since Unicode 6.3.
std::string with_white_space_property(const std::string& pattern);

}  // namespace llava
