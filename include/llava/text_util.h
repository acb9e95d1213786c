#pragma once
// Small string helpers that reproduce Python's str semantics where LLaVA's behaviour depends on them.
#include <string>
#include <string_view>
#include <vector>

namespace llava {

std::string python_strip(const std::string& text);                                  // str.strip()
std::string python_lstrip_chars(const std::string& text, const std::string& chars);  // str.lstrip(chars)
int python_word_count(std::string_view text);                                       // len(str.split())
std::vector<std::string> python_split(const std::string& text, const std::string& sep);  // str.split(sep)
std::string replace_all(std::string text, const std::string& from, const std::string& to);
// The text as it may be printed: valid UTF-8 is kept, any other byte (and control characters but \n and
// \t) becomes "\xNN", so a message that quotes input bytes never breaks the terminal's UTF-8.
std::string printable(const std::string& text);
// "line L, column C" of a byte offset (1-based), for JSON error messages.
std::string line_column(std::string_view text, size_t offset);

}  // namespace llava
