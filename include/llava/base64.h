#pragma once
// Standard base64 (RFC 4648, '+' '/', '=' padding; whitespace ignored). Also accepts a
// "data:image/...;base64," URL prefix. Returns false on any invalid input instead of throwing,
// because the dataset uses "does it decode?" to tell base64 entries from paths.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llava {

bool base64_decode(std::string_view text, std::vector<uint8_t>& out);
std::string base64_encode(const uint8_t* data, size_t size);

}  // namespace llava
