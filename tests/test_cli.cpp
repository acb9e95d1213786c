// The llava-train command line: options (defaults < YAML < flags, unknown keys), and the data
// subcommands run as a user runs them, through the built binary.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llava/error.h"
#include "llava/options.h"
#include "test_data_support.h"

using namespace llava;
using nlohmann::json;

namespace {

struct RunResult {
  int code;
  std::string out;
};

RunResult run(const std::string& args) {
  std::string cmd = std::string(LLAVA_BINARY) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  return {WEXITSTATUS(status), out};
}

Command parse(std::vector<std::string> args) {
  args.insert(args.begin(), "llava-train");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

}  // namespace

TEST(Options, DefaultsThenYamlThenFlags) {
  std::string dir = llava::testing::temp_dir("cli_yaml");
  std::ofstream(dir + "/c.yaml") << "learning_rate: 2.0e-5\nbf16: True\nversion: plain\nper_device_train_batch_size: 16\n";
  Command c = parse({"--config", dir + "/c.yaml", "--per_device_train_batch_size", "4", "--bf16", "false"});
  EXPECT_EQ(c.name, "train");
  EXPECT_DOUBLE_EQ(c.options.learning_rate, 2e-5);       // YAML over default
  EXPECT_EQ(c.options.version, "plain");
  EXPECT_EQ(c.options.per_device_train_batch_size, 4);  // flag over YAML
  EXPECT_FALSE(c.options.bf16);
  EXPECT_EQ(c.options.warmup_ratio, 0.0);               // default
}

TEST(Options, BooleanForms) {
  EXPECT_TRUE(parse({"--bf16"}).options.bf16);
  EXPECT_TRUE(parse({"--bf16", "True"}).options.bf16);
  EXPECT_FALSE(parse({"--bf16=False", "--tf32", "true"}).options.bf16);
  EXPECT_TRUE(parse({"--gradient_checkpointing", "--tf32", "true"}).options.tf32);
  EXPECT_EQ(parse({"preprocess", "--version", "llava_llama_2"}).options.version, "llava_llama_2");
}

TEST(Options, UnknownKeysNameTheClosestKnownKey) {
  try {
    parse({"--learning_rat", "1"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'learning_rat' (did you mean 'learning_rate'?)"), std::string::npos) << e.what();
  }
  std::string dir = llava::testing::temp_dir("cli_yaml_bad");
  std::ofstream(dir + "/c.yaml") << "num_train_epoch: 1\n";
  try {
    parse({"--config", dir + "/c.yaml"});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("did you mean 'num_train_epochs'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("c.yaml"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse({"--per_device_train_batch_size", "four"}), Error);
  EXPECT_THROW(parse({"frobnicate"}), Error);
}

// Every shipped recipe must load: a typo in a config would otherwise only show at launch time.
TEST(Options, ShippedConfigsParse) {
  int n = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::string(LLAVA_SOURCE_DIR) + "/configs")) {
    if (entry.path().extension() != ".yaml") continue;
    Options o;
    EXPECT_NO_THROW(apply_yaml(o, entry.path().string())) << entry.path();
    ++n;
  }
  EXPECT_GE(n, 7);
}

TEST(Cli, VersionHelpAndErrors) {
  RunResult v = run("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("llava-train"), std::string::npos);
  EXPECT_NE(v.out.find("LibTorch"), std::string::npos) << v.out;
  RunResult h = run("--help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("--gradient_accumulation_steps"), std::string::npos);
  RunResult bad = run("train --lerning_rate 1");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("did you mean 'learning_rate'"), std::string::npos) << bad.out;
}

TEST(Cli, CheckDataReportsBadSamplesAndExitsOne) {
  const auto& d = llava::testing::tiny_data_dir();
  std::string dir = llava::testing::temp_dir("cli_check");
  std::ofstream(dir + "/data.json") << R"([
    {"id": "good", "image": "a.png", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "red"}]},
    {"id": "two", "image": "a.png", "conversations": [{"from": "human", "value": "<image><image>"}, {"from": "gpt", "value": "x"}]},
    {"id": "gone", "image": "nope.png", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}])";
  RunResult r = run("check-data --model_name_or_path " + d.model_dir + " --data_path " + dir + "/data.json --image_folder " + d.image_dir);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("3 samples, 1 images, 1 ok, 2 bad"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("image_marker_count: 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("missing_image: 1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sample 2 (id 'gone')"), std::string::npos) << r.out;
}

// A mixture: check-data and preprocess count per data set (each entry's strategy and share), with the
// second entry's own image folder; a mixture entry that does not exist is an error naming it.
TEST(Cli, CheckDataAndPreprocessReportPerDataSet) {
  const auto& d = llava::testing::tiny_data_dir();
  std::string dir = llava::testing::temp_dir("cli_mix");
  std::ofstream(dir + "/a.json") << R"([
    {"id": "a0", "image": "a.png", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "red"}]},
    {"id": "a1", "image": "nope.png", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]},
    {"id": "a2", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}]}])";
  std::ofstream(dir + "/b.jsonl") << R"({"id": "b0", "image": "a.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "x"}]})"
                                  << "\n";
  std::ofstream(dir + "/mix.yaml") << "datasets:\n  - json_path: a.json\n    sampling_strategy: \"first:66%\"\n"
                                   << "  - json_path: b.jsonl\n    image_folder: " << d.image_dir << "\n";
  const std::string common = " --model_name_or_path " + d.model_dir + " --data_path " + dir + "/mix.yaml --image_folder " +
                             d.image_dir + " --data_cache_dir none";
  RunResult r = run("check-data" + common);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("mix.yaml: 3 samples, 2 images, 2 ok, 1 bad"), std::string::npos) << r.out;
  // first:66% of 3 = ceil(1.98) = 2
  EXPECT_NE(r.out.find("data set 0: " + dir + "/a.json (first:66%: 2 of 3 samples): 2 samples, 1 images, 1 ok, 1 bad"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("data set 1: " + dir + "/b.jsonl (all: 1 of 1 samples): 1 samples, 1 images, 1 ok, 0 bad"),
            std::string::npos)
      << r.out;
  RunResult p = run("preprocess" + common + " --output " + dir + "/pre.jsonl");
  EXPECT_EQ(p.code, 0) << p.out;
  EXPECT_NE(p.out.find("a.json (first:66%: 2 of 3 samples): 2 samples, 1 ok, 1 bad"), std::string::npos) << p.out;
  std::ofstream(dir + "/gone.yaml") << "datasets:\n  - json_path: gone.json\n";
  RunResult g = run("check-data --model_name_or_path " + d.model_dir + " --data_path " + dir + "/gone.yaml");
  EXPECT_EQ(g.code, 1);
  EXPECT_NE(g.out.find("gone.yaml: datasets[0] (gone.json): no such file"), std::string::npos) << g.out;
}

TEST(Cli, PreprocessMatchesFixture) {
  LLAVA_REQUIRE_FIXTURES();
  std::string f = llava::testing::fixture("llava-tiny");
  std::string out = llava::testing::temp_dir("cli_pre") + "/pre.jsonl";
  RunResult r = run("preprocess --model_name_or_path " + f + " --data_path " + f + "/data.json --image_folder " + f +
                    "/images --output " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  json expected = json::parse(llava::testing::read_file(f + "/expected/samples.json"));
  const json& samples = expected.contains("samples") ? expected["samples"] : expected;
  std::ifstream in(out);
  std::string line;
  size_t i = 0;
  for (; std::getline(in, line); ++i) {
    json got = json::parse(line);
    const json& e = samples[i];
    EXPECT_EQ(got["status"], "ok");
    EXPECT_EQ(got["index"], i);
    EXPECT_EQ(got["prompt"], e["prompt"]) << "sample " << i;
    EXPECT_EQ(got["input_ids"], e["input_ids"]) << "sample " << i;
    EXPECT_EQ(got["labels"], e["labels"]) << "sample " << i;
    EXPECT_EQ(got["length_with_images"], e["merged_seq_len"]) << "sample " << i;
  }
  EXPECT_EQ(i, 6u);
}

TEST(Cli, TokenizeMatchesTokenizerFixture) {
  LLAVA_REQUIRE_FIXTURES();
  json cases = json::parse(llava::testing::read_file(llava::testing::fixture("tokenizer/cases.json")))["cases"];
  std::string dir = llava::testing::temp_dir("cli_tok");
  for (bool legacy : {false, true}) {
    std::ofstream in(dir + "/in.jsonl");
    std::vector<json> want;
    for (const auto& c : cases)
      if (c["legacy"] == legacy) {
        in << json{{"text", c["text"]}, {"image_token", c["kind"] == "image_token"}}.dump() << "\n";
        want.push_back(c);
      }
    in.close();
    RunResult r = run("tokenize --model_name_or_path " + llava::testing::fixture("llava-tiny") + " --legacy " +
                      (legacy ? "true" : "false") + " --input " + dir + "/in.jsonl --output " + dir + "/out.jsonl");
    ASSERT_EQ(r.code, 0) << r.out;
    std::ifstream out(dir + "/out.jsonl");
    std::string line;
    size_t k = 0, mismatches = 0;
    for (; std::getline(out, line); ++k) {
      json got = json::parse(line);
      if (got["ids"] != want[k]["ids"] || got["pieces"] != want[k]["pieces"]) ++mismatches;
    }
    EXPECT_EQ(k, want.size());
    EXPECT_EQ(mismatches, 0u) << "legacy " << legacy;
  }
}
