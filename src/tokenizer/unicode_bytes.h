#pragma once
// UTF-8 and byte-level helpers of the BPE tokenizer: validity, HF's errors="replace" decoding, NFC
// (utf8proc), and GPT-2's byte-level alphabet (bytes_to_unicode), in which tokenizer.json writes its pieces.
#include <cstdint>
#include <string>
#include <string_view>

namespace llava::unicode {

// Byte offset of the first ill-formed UTF-8 sequence, or std::string::npos when text is valid UTF-8.
size_t invalid_utf8_offset(std::string_view text);

// bytes as UTF-8 text with every maximal ill-formed subsequence replaced by U+FFFD (Unicode's
// recommended practice; what Python's bytes.decode("utf-8", "replace") and Rust's from_utf8_lossy do).
std::string utf8_replace_invalid(std::string_view bytes);

// Unicode NFC of valid UTF-8 text (embedded NULs allowed); throws llava::Error on invalid input.
std::string nfc(std::string_view text);

// The byte-level alphabet: byte b is written as the code point byte_to_code_point(b) (printable Latin-1
// bytes as themselves, the others as U+0100...U+0143: ' ' -> 'Ġ', '\n' -> 'Ċ').
uint32_t byte_to_code_point(uint8_t byte);
// A byte-level string (a tokenizer.json piece) back to its bytes; false when a character is outside the
// alphabet (e.g. an added token "a b" with a real space: the ByteLevel decoder then keeps its UTF-8).
bool byte_level_to_bytes(std::string_view piece, std::string* bytes);
// Raw bytes -> byte-level string ("hello world" -> "helloĠworld").
std::string bytes_to_byte_level(std::string_view bytes);

}  // namespace llava::unicode
