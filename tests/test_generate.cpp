// Generation: greedy ids against transformers 4.37.2's (fixture generate.json), one by one and batched (left
// padding), with and without the KV cache; the cache against a full forward; bf16; sampling with a seed; EOS;
// `generate --prompt --image` and `eval --generate` through the binary; the repeated --image flag.
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "llava/error.h"
#include "llava/model/generate.h"
#include "llava/pipeline.h"
#include "llava/train/batch.h"
#include "llava/train/evaluate.h"
#include "test_train_support.h"

using namespace llava;
using namespace llava::testing;
using nlohmann::json;

namespace {

json fixture_cases() {
  return json::parse(read_file(fixture_dir() + "/expected/generate.json"))["cases"];
}

// The 9 cases as one data set in case order: data.json's 6 samples, then the 3 extra conversations.
std::string write_case_data(const std::string& dir) {
  json data = json::parse(read_file(fixture_dir() + "/data.json"));
  for (const json& c : fixture_cases()) {
    if (c["source"] != "extra") continue;
    json s = {{"id", c["id"]}, {"conversations", c["conversations"]}};
    if (c.contains("image")) s["image"] = c["image"];
    data.push_back(s);
  }
  const std::string path = dir + "/cases.json";
  std::ofstream(path) << data.dump(1);
  return path;
}

Options fixture_generate_options(const std::string& data_path) {
  Options o;
  o.model_name_or_path = fixture_dir();
  o.data_path = data_path;
  o.image_folder = fixture_dir() + "/images";
  o.max_new_tokens = 24;
  return o;
}

struct FixtureRun {
  std::unique_ptr<DataPipeline> data;
  LoadedLlava model;
};

FixtureRun load_fixture(const std::string& data_path, torch::Dtype dtype = torch::kFloat32) {
  FixtureRun r;
  r.data = make_data_pipeline(fixture_generate_options(data_path), /*needs_dataset=*/true);
  r.data->dataset->set_allow_unanswered(true);
  LoadOptions lo;
  lo.dtype = dtype;
  r.model = load_llava(fixture_dir(), lo);
  return r;
}

std::vector<GeneratedSample> run_generation(FixtureRun& r, int batch_size, GenerationConfig config) {
  GenerateOptions go;
  go.batch_size = batch_size;
  go.generation = config;
  std::vector<GeneratedSample> out;
  generate_and_score(*r.model.model, *r.data->dataset, r.data->example, go,
                     [&](const GeneratedSample& s) { out.push_back(s); });
  return out;
}

GenerationConfig fixture_greedy() {
  GenerationConfig c;
  c.max_new_tokens = 24;
  c.eos_token_id = 2;
  return c;
}

// Prompts of a data set as the model takes them (a right-padded batch).
LlavaInputs prompt_batch(FixtureRun& r, const std::vector<int64_t>& indices) {
  std::vector<Example> examples;
  for (int64_t i : indices)
    examples.push_back(build_generation_example(r.data->dataset->sample(static_cast<size_t>(i)), r.data->example));
  return collate(std::move(examples), r.data->tokenizer.pad_id()).inputs;
}

}  // namespace

TEST(Generate, FixtureGreedyIdsOneByOneAndBatched) {
  LLAVA_REQUIRE_FIXTURES();
  const json cases = fixture_cases();
  FixtureRun r = load_fixture(write_case_data(train_tmp("gen_parity")));
  for (bool cache : {true, false}) {
    for (int batch : {1, 4, 9}) {
      GenerationConfig c = fixture_greedy();
      c.use_cache = cache;
      std::vector<GeneratedSample> got = run_generation(r, batch, c);
      ASSERT_EQ(got.size(), cases.size());
      int identical = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const json& e = cases[i];
        ASSERT_TRUE(got[i].ok) << got[i].error;
        EXPECT_EQ(got[i].id, e["id"].get<std::string>());
        EXPECT_EQ(got[i].prompt, e["prompt"].get<std::string>()) << e["id"];
        EXPECT_EQ(std::vector<int64_t>(got[i].input_ids.begin(), got[i].input_ids.end()),
                  e["input_ids"].get<std::vector<int64_t>>())
            << e["id"];
        EXPECT_EQ(got[i].generated_ids, e["generated_ids"].get<std::vector<int64_t>>())
            << e["id"] << " (batch " << batch << ", cache " << cache << ")";
        EXPECT_EQ(got[i].stopped_on_eos, e["stopped_on_eos"].get<bool>());
        EXPECT_EQ(got[i].text, e["text"].get<std::string>()) << e["id"];
        identical += got[i].generated_ids == e["generated_ids"].get<std::vector<int64_t>>();
      }
      std::printf("  cache %d, batch %d: %d / %zu cases with the reference's 24 ids\n", cache, batch, identical,
                  cases.size());
    }
  }
}

TEST(Generate, StopsRightAfterEos) {
  LLAVA_REQUIRE_FIXTURES();
  // Declaring a token the reference generates the "EOS" must cut every case right after its first occurrence.
  const json cases = fixture_cases();
  const std::vector<int64_t> ids4 = cases[4]["generated_ids"].get<std::vector<int64_t>>();
  const int64_t eos = ids4[5];
  FixtureRun r = load_fixture(write_case_data(train_tmp("gen_eos")));
  GenerationConfig c = fixture_greedy();
  c.eos_token_id = eos;
  std::vector<GeneratedSample> got = run_generation(r, 9, c);
  int stopped = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<int64_t> want = cases[i]["generated_ids"].get<std::vector<int64_t>>();
    auto at = std::find(want.begin(), want.end(), eos);
    const bool stops = at != want.end();
    if (stops) want.erase(at + 1, want.end());
    EXPECT_EQ(got[i].generated_ids, want) << cases[i]["id"];
    EXPECT_EQ(got[i].stopped_on_eos, stops) << cases[i]["id"];
    stopped += got[i].stopped_on_eos;
  }
  std::printf("  eos id %lld: %d of %zu cases stop early (case 4 after %zu tokens)\n", static_cast<long long>(eos),
              stopped, cases.size(), got[4].generated_ids.size());
  EXPECT_EQ(got[4].generated_ids.size(), static_cast<size_t>(std::find(ids4.begin(), ids4.end(), eos) - ids4.begin() + 1));
}

TEST(Generate, Bf16RunsAndStaysClose) {
  LLAVA_REQUIRE_FIXTURES();
  const json cases = fixture_cases();
  const std::string data = write_case_data(train_tmp("gen_bf16"));
  FixtureRun f32 = load_fixture(data), b16 = load_fixture(data, torch::kBFloat16);
  // Last-position logits of every prompt (the first generation step), bf16 against fp32.
  double worst_rel = 0;
  int same_first = 0, decided = 0;
  for (int64_t i = 0; i < static_cast<int64_t>(cases.size()); ++i) {
    torch::NoGradGuard no_grad;
    auto last = [&](FixtureRun& r) {
      LlavaOutput o = r.model.model->forward(prompt_batch(r, {i}), /*return_logits=*/true);
      return o.logits[0][o.lengths[0] - 1];  // [V] fp32
    };
    torch::Tensor a = last(f32), b = last(b16);
    const double diff = (a - b).abs().max().item<double>(), scale = a.abs().max().item<double>();
    worst_rel = std::max(worst_rel, diff / scale);
    const double margin = cases[i]["step_margin"][0].get<double>();
    if (margin > 2 * diff) {  // the bf16 error cannot flip this argmax
      ++decided;
      same_first += b.argmax().item<int64_t>() == cases[i]["generated_ids"][0].get<int64_t>();
    }
  }
  std::printf("  bf16 vs fp32 first-step logits: max |diff| / max |logit| = %.4f; first token equal in %d of %d "
              "cases whose fp32 margin exceeds twice the difference\n",
              worst_rel, same_first, decided);
  EXPECT_LT(worst_rel, 0.03);
  EXPECT_EQ(same_first, decided);
  // Generation runs in bf16, one by one and batched, and gives in-vocabulary ids of full length.
  std::vector<GeneratedSample> one = run_generation(b16, 1, fixture_greedy()), all = run_generation(b16, 9, fixture_greedy());
  int equal_rows = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(one[i].generated_ids.size(), 24u);
    for (int64_t id : one[i].generated_ids) EXPECT_TRUE(id >= 0 && id < 32000);
    equal_rows += one[i].generated_ids == all[i].generated_ids;
  }
  std::printf("  bf16: batched rows equal to one-by-one rows: %d of %zu\n", equal_rows, cases.size());
}

TEST(Generate, KvCacheEqualsFullForward) {
  // A random LLaMA: a full forward over left-padded rows against a prefill + one-token steps with the cache,
  // and each padded row against the same row alone.
  torch::manual_seed(0);
  LlamaConfig c = tiny_config().text;
  LlamaModel llm(c);
  llm->eval();
  torch::NoGradGuard no_grad;
  const int64_t B = 3, T = 11, prefill = 6, D = c.hidden_size;
  const std::vector<int64_t> lengths = {11, 7, 9};  // real positions per row, at the right end
  torch::Tensor embeds = torch::randn({B, T, D});
  torch::Tensor mask = torch::zeros({B, T}, torch::kBool), pos = torch::zeros({B, T}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t offset = T - lengths[b];
    embeds[b].narrow(0, 0, offset).zero_();
    mask[b].narrow(0, offset, lengths[b]).fill_(true);
    pos[b].narrow(0, offset, lengths[b]).copy_(torch::arange(lengths[b]));
  }
  torch::Tensor full = llm->forward(embeds, mask, pos);  // [B, T, D]
  KVCache cache;
  std::vector<torch::Tensor> steps = {llm->forward(embeds.narrow(1, 0, prefill), mask.narrow(1, 0, prefill),
                                                   pos.narrow(1, 0, prefill), &cache)};
  for (int64_t t = prefill; t < T; ++t)
    steps.push_back(llm->forward(embeds.narrow(1, t, 1), mask.narrow(1, 0, t + 1), pos.narrow(1, t, 1), &cache));
  EXPECT_EQ(cache.length(), T);
  torch::Tensor cached = torch::cat(steps, 1);
  double worst_cache = 0, worst_alone = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t offset = T - lengths[b];
    torch::Tensor real_full = full[b].narrow(0, offset, lengths[b]);
    worst_cache = std::max(worst_cache, (real_full - cached[b].narrow(0, offset, lengths[b])).abs().max().item<double>());
    torch::Tensor alone = llm->forward(embeds[b].narrow(0, offset, lengths[b]).unsqueeze(0))[0];  // positions 0..n-1
    worst_alone = std::max(worst_alone, (real_full - alone).abs().max().item<double>());
  }
  std::printf("  max |diff| at real positions: cache vs full forward %.2e, padded row vs row alone %.2e\n", worst_cache,
              worst_alone);
  EXPECT_LT(worst_cache, 1e-5);
  EXPECT_LT(worst_alone, 1e-5);
}

TEST(Generate, SamplingIsReproducibleWithASeed) {
  // The tiny random model (no fixtures needed): the same seed gives the same ids, another seed other ids;
  // top_k 1 and a tiny top_p leave only the argmax, so they sample the greedy ids.
  const std::string dir = train_tmp("gen_sample");
  Options o = tiny_options(write_tiny_data(dir, "iIti"), dir + "/out");
  auto data = make_data_pipeline(o, true);
  LoadedLlava model = load_llava(o.model_name_or_path);
  auto run = [&](bool sample, double temperature, int64_t top_k, double top_p, uint64_t seed, int batch) {
    GenerateOptions go;
    go.batch_size = batch;
    go.seed = seed;
    go.generation.max_new_tokens = 12;
    go.generation.eos_token_id = -1;
    go.generation.do_sample = sample;
    go.generation.temperature = temperature;
    go.generation.top_k = top_k;
    go.generation.top_p = top_p;
    std::vector<std::vector<int64_t>> ids;
    generate_and_score(*model.model, *data->dataset, data->example, go,
                       [&](const GeneratedSample& s) { ids.push_back(s.generated_ids); });
    return ids;
  };
  auto a = run(true, 1.5, 0, 1.0, 5, 2), b = run(true, 1.5, 0, 1.0, 5, 2), other = run(true, 1.5, 0, 1.0, 6, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);
  auto greedy = run(false, 1.0, 50, 1.0, 0, 2);
  EXPECT_EQ(run(true, 1.5, 1, 1.0, 9, 2), greedy);
  EXPECT_EQ(run(true, 1.5, 0, 1e-6, 9, 2), greedy);
  EXPECT_EQ(run(false, 1.0, 50, 1.0, 0, 3), greedy);  // greedy: batching does not change the ids
  size_t differ = 0;
  for (size_t i = 0; i < a.size(); ++i)
    for (size_t t = 0; t < a[i].size(); ++t) differ += a[i][t] != other[i][t];
  std::printf("  seed 5 twice: identical; seed 5 vs 6: %zu of %zu tokens differ\n", differ, a.size() * 12);
}

TEST(Generate, TopKAndTopPKeepHfsTokenSets) {
  // probabilities 0.5, 0.3, 0.1, 0.06, 0.04: top_k 2 keeps ids {0, 1}; top_p 0.85 keeps {0, 1, 2} (HF drops the
  // ascending tail whose cumulative mass is <= 0.15: 0.04 + 0.06 = 0.10); top_p 0.5 keeps {0}.
  torch::Tensor logits = torch::tensor({0.5, 0.3, 0.1, 0.06, 0.04}).log().unsqueeze(0);
  at::Generator gen = at::detail::createCPUGenerator(1);
  auto draws = [&](int64_t top_k, double top_p) {
    GenerationConfig c;
    c.do_sample = true;
    c.top_k = top_k;
    c.top_p = top_p;
    std::map<int64_t, int> count;
    for (int i = 0; i < 3000; ++i) ++count[choose_next_tokens(logits, c, &gen)[0].item<int64_t>()];
    return count;
  };
  auto k2 = draws(2, 1.0), p85 = draws(0, 0.85), p50 = draws(0, 0.5), all = draws(0, 1.0);
  std::printf("  top_k 2: %zu ids (id 0: %d of 3000, expect 1875); top_p 0.85: %zu ids; top_p 0.5: %zu; none: %zu\n",
              k2.size(), k2[0], p85.size(), p50.size(), all.size());
  EXPECT_EQ(k2.size(), 2u);
  EXPECT_TRUE(k2.count(0) && k2.count(1));
  EXPECT_NEAR(k2[0] / 3000.0, 0.5 / 0.8, 0.04);
  EXPECT_EQ(p85.size(), 3u);
  EXPECT_FALSE(p85.count(3) || p85.count(4));
  EXPECT_EQ(p50.size(), 1u);
  EXPECT_EQ(all.size(), 5u);
  GenerationConfig bad;
  bad.do_sample = true;
  bad.temperature = 0;
  EXPECT_THROW(bad.validate(), Error);
  bad.temperature = 1;
  bad.top_p = 0;
  EXPECT_THROW(bad.validate(), Error);
}

TEST(GenerateCli, DataPathPromptAndRepeatedImages) {
  LLAVA_REQUIRE_FIXTURES();
  const json cases = fixture_cases();
  const std::string out = train_tmp("gen_cli"), f = fixture_dir();
  const std::string model = "--model_name_or_path " + f + " --max_new_tokens 24 ";
  // --data_path, batched: one line per sample with the documented keys in order
  RunResult r = run_binary("generate " + model + "--data_path " + f + "/data.json --image_folder " + f +
                           "/images --per_device_eval_batch_size 4 --output " + out + "/g.jsonl");
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = lines_of(read_file(out + "/g.jsonl"));
  ASSERT_EQ(lines.size(), 6u);
  for (size_t i = 0; i < lines.size(); ++i) {
    json g = json::parse(lines[i]);
    std::vector<std::string> keys;
    for (auto it = g.begin(); it != g.end(); ++it) keys.push_back(it.key());
    std::sort(keys.begin(), keys.end());
    EXPECT_EQ(lines[i].rfind("{\"index\":" + std::to_string(i) + ",\"id\":", 0), 0u);
    EXPECT_EQ(keys, (std::vector<std::string>{"generated_ids", "id", "index", "input_ids", "prompt", "stopped_on_eos",
                                              "text"}));
    EXPECT_EQ(g["generated_ids"], cases[i]["generated_ids"]) << cases[i]["id"];
    EXPECT_EQ(g["input_ids"], cases[i]["input_ids"]);
    EXPECT_EQ(g["text"], cases[i]["text"]);
  }
  // --prompt with two --image flags, inline markers: case x1; the text goes to stdout
  const json& x1 = cases[7];
  r = run_binary("generate " + model + "--image_folder " + f + "/images --prompt '" +
                 x1["conversations"][0]["value"].get<std::string>() + "' --image " + f + "/images/s4_b.png --image s0.png" +
                 " --output " + out + "/p.jsonl");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, x1["text"].get<std::string>() + "\n");
  json p = json::parse(lines_of(read_file(out + "/p.jsonl")).at(0));
  EXPECT_EQ(p["generated_ids"], x1["generated_ids"]);
  EXPECT_EQ(p["prompt"], x1["prompt"]);
  // no marker: the images go in front of the question, in flag order
  r = run_binary("generate " + model + "--max_new_tokens 2 --prompt 'Which one?' --image " + f + "/images/s0.png --image " +
                 f + "/images/s1_a.png --output " + out + "/q.jsonl");
  ASSERT_EQ(r.code, 0) << r.err;
  json q = json::parse(lines_of(read_file(out + "/q.jsonl")).at(0));
  EXPECT_NE(q["prompt"].get<std::string>().find("USER: <image>\n<image>\nWhich one? ASSISTANT:"), std::string::npos)
      << q["prompt"];
  // misuse is an error naming the flags
  r = run_binary("generate " + model + "--prompt hi --data_path " + f + "/data.json");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--prompt or --data_path"), std::string::npos) << r.err;
  r = run_binary("generate " + model + "--data_path " + f + "/data.json --image a.png");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--image goes with --prompt"), std::string::npos) << r.err;
  r = run_binary("generate " + model + "--prompt hi --do_sample --temperature 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--temperature"), std::string::npos) << r.err;
}

// The other model families generate too: LLaVA-1.6 (anyres tiles, image_newline, Mistral, mistral_instruct) and
// LLaVA-NeXT-Interleave (SigLIP, Qwen2 without BOS, qwen_1_5). A batch of 3 left-padded rows gives each row
// the ids it gets alone, and eval --generate scores the same answers.
TEST(GenerateCli, AnyresAndInterleaveModelsBatchedEqualOneByOne) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string out = train_tmp("gen_families");
  const std::vector<std::pair<std::string, std::string>> families = {
      {"llava-next-tiny", "--version mistral_instruct"},
      {"llava-interleave-tiny", "--version qwen_1_5 --image_placement next"}};
  for (const auto& [name, flags] : families) {
    const std::string f = fixture(name);
    const std::string args = "--model_name_or_path " + f + " --data_path " + f + "/data.json --image_folder " + f +
                             "/images --max_new_tokens 6 " + flags;
    std::vector<std::vector<json>> runs;
    for (const char* batch : {"1", "3"}) {
      const std::string file = out + "/" + name + "_" + batch + ".jsonl";
      RunResult r = run_binary("generate " + args + " --per_device_eval_batch_size " + batch + " --output " + file);
      ASSERT_EQ(r.code, 0) << name << ": " << r.err;
      std::vector<json> lines;
      for (const auto& line : lines_of(read_file(file))) lines.push_back(json::parse(line));
      runs.push_back(lines);
    }
    ASSERT_EQ(runs[0].size(), 6u) << name;
    ASSERT_EQ(runs[1].size(), 6u) << name;
    for (size_t i = 0; i < runs[0].size(); ++i) {
      EXPECT_EQ(runs[0][i]["generated_ids"].size(), 6u) << name << " sample " << i;
      EXPECT_EQ(runs[0][i]["generated_ids"], runs[1][i]["generated_ids"]) << name << " sample " << i;
      EXPECT_EQ(runs[0][i]["input_ids"], runs[1][i]["input_ids"]) << name << " sample " << i;
    }
    RunResult e = run_binary("eval " + args + " --generate true --per_device_eval_batch_size 3");
    ASSERT_EQ(e.code, 0) << name << ": " << e.err;
    EXPECT_NE(lines_of(e.out).back().find("\"eval_exact_match\""), std::string::npos) << e.out;
  }
}

TEST(GenerateCli, RepeatedImageFlagKeepsOrderAndReplacesYaml) {
  const std::string dir = train_tmp("gen_flags");
  std::ofstream(dir + "/c.yaml") << "image: [y1.png, y2.png]\nmax_new_tokens: 7\n";
  const std::string cfg = "--config=" + dir + "/c.yaml";
  std::vector<std::string> args = {"llava-train", "generate", "--image", "b.png", "--image=a.png", cfg, "--image", "c.png"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  Command cmd = parse_command_line(static_cast<int>(argv.size()), argv.data());
  EXPECT_EQ(cmd.name, "generate");
  EXPECT_EQ(cmd.options.image, (StringList{"b.png", "a.png", "c.png"}));  // the command line replaces YAML's list
  EXPECT_EQ(cmd.options.max_new_tokens, 7);
  std::vector<std::string> yaml_only = {"llava-train", "generate", cfg};
  argv.clear();
  for (auto& a : yaml_only) argv.push_back(a.data());
  EXPECT_EQ(parse_command_line(static_cast<int>(argv.size()), argv.data()).options.image,
            (StringList{"y1.png", "y2.png"}));
}

TEST(EvalGenerate, ExactMatchOnKnownAnswers) {
  LLAVA_REQUIRE_FIXTURES();
  // data.json with the final answers of samples 0, 2, 4 replaced by the reference model's greedy text (with
  // whitespace around it, which the comparison strips): 3 of 6 exact matches.
  const json cases = fixture_cases();
  const std::string out = train_tmp("eval_gen"), f = fixture_dir();
  json data = json::parse(read_file(f + "/data.json"));
  for (size_t i : {0, 2, 4}) data[i]["conversations"].back()["value"] = "  " + cases[i]["text"].get<std::string>() + "\n";
  std::ofstream(out + "/data.json") << data.dump();
  const std::string args = "eval --model_name_or_path " + f + " --data_path " + out + "/data.json --image_folder " + f +
                           "/images --per_device_eval_batch_size 4 --max_new_tokens 24";
  RunResult r = run_binary(args + " --generate true --show_examples 2 --output " + out + "/e.jsonl");
  ASSERT_EQ(r.code, 0) << r.err;
  json summary = json::parse(lines_of(r.out).back());
  std::printf("  eval_exact_match %.3f (expected 0.5)\n", summary["eval_exact_match"].get<double>());
  EXPECT_DOUBLE_EQ(summary["eval_exact_match"].get<double>(), 0.5);
  auto lines = lines_of(read_file(out + "/e.jsonl"));
  ASSERT_EQ(lines.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    json l = json::parse(lines[i]);
    EXPECT_EQ(l["exact_match"].get<bool>(), i % 2 == 0) << i;
    EXPECT_EQ(l["generated_text"], cases[i]["text"]);
  }
  EXPECT_NE(r.err.find("example 0 (id 's0_one_image_path')"), std::string::npos) << r.err;
  // without --generate the lines and the summary are what eval always wrote
  RunResult plain = run_binary(args + " --output " + out + "/p.jsonl");
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_FALSE(json::parse(lines_of(plain.out).back()).contains("eval_exact_match"));
  auto plain_lines = lines_of(read_file(out + "/p.jsonl"));
  ASSERT_EQ(plain_lines.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    json a = json::parse(plain_lines[i]), b = json::parse(lines[i]);
    EXPECT_FALSE(a.contains("generated_text"));
    EXPECT_EQ(a["loss"], b["loss"]);
  }
}
