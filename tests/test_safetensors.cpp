#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "llava/error.h"
#include "llava/safetensors.h"
#include "test_support.h"

using namespace llava;

TEST(Safetensors, WriteThenReadBack) {
  std::string dir = llava::testing::temp_dir("st_rw");
  std::vector<float> a = {1.f, -2.5f, 3.25f, 0.f, 1e-3f, 7.f};
  std::vector<uint16_t> b = {float_to_bf16(1.5f), float_to_bf16(-0.25f)};
  write_safetensors(dir + "/x.safetensors", {{"b.bf16", DType::BF16, {2}, b.data(), 4},
                                             {"a.f32", DType::F32, {2, 3}, a.data(), 24}});
  auto f = SafetensorsFile::open(dir + "/x.safetensors");
  ASSERT_EQ(f->tensors().size(), 2u);
  EXPECT_EQ(f->tensors()[0].name, "a.f32");  // written in name order
  EXPECT_EQ(f->at("a.f32").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f->to_float(f->at("a.f32")), a);
  EXPECT_EQ(f->to_float(f->at("b.bf16")), (std::vector<float>{1.5f, -0.25f}));
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_FALSE(std::filesystem::exists(dir + "/x.safetensors.tmp"));
}

TEST(Safetensors, ShardedIndexRoundTrip) {
  std::string dir = llava::testing::temp_dir("st_shard");
  std::vector<float> x(100, 1.f), y(100, 2.f), z(10, 3.f);
  write_safetensors_sharded(dir, {{"x", DType::F32, {100}, x.data(), 400}, {"y", DType::F32, {100}, y.data(), 400},
                                  {"z", DType::F32, {10}, z.data(), 40}}, 500);
  EXPECT_TRUE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  auto ckpt = SafetensorsCheckpoint::open_dir(dir);
  EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(ckpt.files().size(), 2u);
  const auto* e = ckpt.find("z");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->file->to_float(*e->info)[9], 3.f);
}

TEST(Safetensors, HalfConversions) {
  EXPECT_EQ(half_to_float(0x3c00), 1.f);
  EXPECT_EQ(half_to_float(0xc000), -2.f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(half_to_float(0x7c00)));
  EXPECT_EQ(float_to_bf16(1.f), 0x3f80);
  EXPECT_EQ(bf16_to_float(float_to_bf16(3.140625f)), 3.140625f);
}

static void expect_error(const std::string& path, const std::string& needle) {
  try {
    SafetensorsFile::open(path);
    FAIL() << "no error for " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "error must name the file: " << e.what();
  }
}

TEST(Safetensors, BadFilesGiveClearErrors) {
  std::string dir = llava::testing::temp_dir("st_bad");
  std::vector<float> a(16, 1.f);
  write_safetensors(dir + "/good.safetensors", {{"w", DType::F32, {16}, a.data(), 64}});
  std::string good = llava::testing::read_file(dir + "/good.safetensors");
  auto put = [&](const std::string& name, const std::string& bytes) {
    std::ofstream(dir + "/" + name, std::ios::binary) << bytes;
    return dir + "/" + name;
  };
  expect_error(put("trunc.safetensors", good.substr(0, good.size() - 10)), "outside the data section");
  expect_error(put("tiny.safetensors", "abc"), "truncated");
  std::string bad_json = good;
  bad_json[9] = '!';
  expect_error(put("json.safetensors", bad_json), "bad safetensors header JSON");
  std::string header = R"({"w":{"dtype":"Q7","shape":[16],"data_offsets":[0,64]}})";
  std::string len(8, '\0');
  len[0] = static_cast<char>(header.size());
  expect_error(put("dtype.safetensors", len + header + std::string(64, '\0')), "unsupported dtype 'Q7'");
  expect_error(dir + "/missing.safetensors", "cannot open");
  auto f = SafetensorsFile::open(dir + "/good.safetensors");
  try {
    f->at("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'nope'"), std::string::npos);
  }
}

TEST(Safetensors, ReadsFixtureModel) {
  LLAVA_REQUIRE_FIXTURES();
  auto f = SafetensorsFile::open(llava::testing::fixture("llava-tiny/model.safetensors"));
  const auto& t = f->at("language_model.model.embed_tokens.weight");
  EXPECT_EQ(t.shape, (std::vector<int64_t>{32000, 64}));
  EXPECT_EQ(t.dtype, DType::F32);
  EXPECT_EQ(f->metadata().at("format"), "pt");
}
