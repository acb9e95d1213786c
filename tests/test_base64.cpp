#include <gtest/gtest.h>

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
