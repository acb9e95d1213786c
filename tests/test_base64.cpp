#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "llava/base64.h"

using llava::base64_decode;
using llava::base64_encode;

TEST(Base64, RoundTripsAllLengths) {
  for (size_t n = 0; n < 20; ++n) {
    std::vector<uint8_t> in(n);
    for (size_t i = 0; i < n; ++i) in[i] = static_cast<uint8_t>(i * 37 + 11);
    std::string enc = base64_encode(in.data(), in.size());
    std::vector<uint8_t> out;
    if (n == 0) {
      EXPECT_FALSE(base64_decode(enc, out));  // empty text is not an image
      continue;
    }
    ASSERT_TRUE(base64_decode(enc, out)) << enc;
    EXPECT_EQ(out, in);
  }
}

TEST(Base64, KnownVectors) {
  std::vector<uint8_t> out;
  ASSERT_TRUE(base64_decode("Zm9vYmFy", out));
  EXPECT_EQ(std::string(out.begin(), out.end()), "foobar");
  ASSERT_TRUE(base64_decode("Zm9vYg==", out));
  EXPECT_EQ(std::string(out.begin(), out.end()), "foob");
  ASSERT_TRUE(base64_decode("data:image/png;base64,Zm9v", out));
  EXPECT_EQ(std::string(out.begin(), out.end()), "foo");
}

TEST(Base64, RejectsPathsAndGarbage) {
  std::vector<uint8_t> out;
  EXPECT_FALSE(base64_decode("images/cat.png", out));  // '.' is not in the alphabet
  EXPECT_FALSE(base64_decode("abcde", out));           // 5 sextets cannot be whole bytes
  EXPECT_FALSE(base64_decode("Zm9v=Zm9v", out));       // data after padding
  EXPECT_FALSE(base64_decode("data:text/plain,hello", out));
}

// The decoder's 4-character fast path against a one-character-at-a-time reference (the rules in
// base64.h), on valid text with whitespace, padding and foreign characters dropped in anywhere.
namespace {
bool reference_decode(std::string_view text, std::vector<uint8_t>& out) {
  static const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  out.clear();
  if (text.rfind("data:", 0) == 0) {
    size_t comma = text.find(',');
    if (comma == std::string_view::npos || text.substr(0, comma).find(";base64") == std::string_view::npos)
      return false;
    text.remove_prefix(comma + 1);
  }
  uint32_t acc = 0;
  int bits = 0, sextets = 0, padding = 0;
  for (char ch : text) {
    if (ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t') continue;
    if (ch == '=') {
      ++padding;
      continue;
    }
    const size_t v = alphabet.find(ch);
    if (padding > 0 || v == std::string::npos || ch == '\0') return false;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    ++sextets;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xFF));
    }
  }
  return sextets > 0 && padding <= 2 && sextets % 4 != 1 && (padding == 0 || (sextets + padding) % 4 == 0);
}
}  // namespace

TEST(Base64, FastPathMatchesReference) {
  uint32_t state = 12345;
  auto rnd = [&](uint32_t n) {
    state = state * 1664525u + 1013904223u;
    return (state >> 8) % n;
  };
  const char extras[] = {' ', '\n', '\r', '\t', '=', '.', '-', '_', '\0', '\xff'};
  for (int iter = 0; iter < 3000; ++iter) {
    std::vector<uint8_t> bytes(rnd(60));
    for (auto& b : bytes) b = static_cast<uint8_t>(rnd(256));
    std::string text = base64_encode(bytes.data(), bytes.size());
    if (rnd(4) == 0) text = "data:image/png;base64," + text;
    const int edits = iter % 3 == 0 ? 0 : static_cast<int>(rnd(4));
    for (int e = 0; e < edits; ++e) {
      const size_t at = rnd(static_cast<uint32_t>(text.size() + 1));
      if (rnd(3) == 0 && !text.empty() && at < text.size()) text.erase(at, 1);
      else text.insert(text.begin() + at, extras[rnd(sizeof extras)]);
    }
    std::vector<uint8_t> got, want;
    const bool ok = base64_decode(text, got), ref = reference_decode(text, want);
    ASSERT_EQ(ok, ref) << text;
    if (ok) {
      ASSERT_EQ(got, want) << text;
      if (edits == 0) {
        ASSERT_EQ(got, bytes) << text;
      }
    }
  }
}
