// `llava-train eval` through the binary: per-sample losses against the fixture's (transformers 4.37.2 + LLaVA),
// the summary line, skipped samples; batch size does not change the numbers.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "llava/error.h"
#include "test_train_support.h"

using namespace llava;
using namespace llava::testing;
using nlohmann::json;

TEST(Eval, FixturePerSampleLossesMatchTheReference) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string out = train_tmp("eval_fixture");
  const std::string f = fixture_dir();
  json expected = json::parse(read_file(f + "/expected/samples.json"))["samples"];
  for (int batch : {1, 4}) {
    RunResult r = run_binary("eval --model_name_or_path " + f + " --data_path " + f + "/data.json --image_folder " + f +
                             "/images --per_device_eval_batch_size " + std::to_string(batch) + " --output " + out +
                             "/eval.jsonl");
    ASSERT_EQ(r.code, 0) << r.err;
    auto lines = lines_of(read_file(out + "/eval.jsonl"));
    ASSERT_EQ(lines.size(), expected.size());
    double loss_sum = 0, worst = 0;
    int64_t tokens = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      json got = json::parse(lines[i]);
      EXPECT_EQ(lines[i].rfind("{\"index\":", 0), 0u) << lines[i];  // keys in the documented order
      EXPECT_EQ(got["index"].get<size_t>(), i);
      EXPECT_EQ(got["id"], expected[i]["id"]);
      EXPECT_EQ(got["num_target_tokens"].get<int64_t>(), expected[i]["num_label_tokens"].get<int64_t>());
      const double d = std::abs(got["loss"].get<double>() - expected[i]["loss"].get<double>());
      EXPECT_LE(d, 1e-4) << expected[i]["id"];
      worst = std::max(worst, d);
      const double acc = got["token_accuracy"].get<double>();
      EXPECT_GE(acc, 0.0);
      EXPECT_LE(acc, 1.0);
      loss_sum += got["loss"].get<double>() * got["num_target_tokens"].get<int64_t>();
      tokens += got["num_target_tokens"].get<int64_t>();
    }
    std::printf("  batch %d: max |per-sample loss diff| vs reference %.2e\n", batch, worst);
    // the summary is the last stdout line: the token-weighted mean
    auto out_lines = lines_of(r.out);
    ASSERT_FALSE(out_lines.empty());
    json summary = json::parse(out_lines.back());
    EXPECT_NEAR(summary["eval_loss"].get<double>(), loss_sum / tokens, 1e-6);
    EXPECT_EQ(summary["eval_samples"].get<int64_t>(), 6);
    EXPECT_EQ(summary["eval_skipped"].get<int64_t>(), 0);
    EXPECT_TRUE(summary.contains("eval_token_accuracy"));
  }
}

TEST(Eval, StdoutBadSamplesAndMaxSamples) {
  const std::string out = train_tmp("eval_tiny");
  const std::string data = write_tiny_data(out, "itxI");
  RunResult r = run_binary("eval --model_name_or_path " + tiny_model_dir() + " --data_path " + data +
                           " --image_folder " + tiny_data_dir().image_dir + " --per_device_eval_batch_size 3");
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;  // 4 samples (one bad), then the summary
  json bad = json::parse(lines[2]);
  EXPECT_EQ(bad["index"].get<int>(), 2);
  EXPECT_EQ(bad["id"], "t2");
  EXPECT_EQ(bad["status"], "error");
  EXPECT_NE(bad["error"].get<std::string>().find("t2"), std::string::npos);
  EXPECT_NE(r.err.find("t2"), std::string::npos);
  json summary = json::parse(lines.back());
  EXPECT_EQ(summary["eval_samples"].get<int64_t>(), 3);
  EXPECT_EQ(summary["eval_skipped"].get<int64_t>(), 1);
  // batch size 1 gives the same per-sample numbers
  RunResult one = run_binary("eval --model_name_or_path " + tiny_model_dir() + " --data_path " + data +
                             " --image_folder " + tiny_data_dir().image_dir + " --per_device_eval_batch_size 1");
  auto lines1 = lines_of(one.out);
  ASSERT_EQ(lines1.size(), 5u);
  for (size_t i : {0, 1, 3})
    EXPECT_NEAR(json::parse(lines1[i])["loss"].get<double>(), json::parse(lines[i])["loss"].get<double>(), 1e-5);
  RunResult two = run_binary("eval --model_name_or_path " + tiny_model_dir() + " --data_path " + data +
                             " --image_folder " + tiny_data_dir().image_dir + " --max_samples 2");
  EXPECT_EQ(lines_of(two.out).size(), 3u);
}
