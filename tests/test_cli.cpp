// The llava-train command line: options (defaults < YAML < flags, unknown keys), and the data
// subcommands run as a user runs them, through the built binary.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llava/anyres.h"
#include "llava/error.h"
#include "llava/options.h"
#include "llava/safetensors.h"
#include "test_data_support.h"

using namespace llava;
using llava::testing::CommandResult;
using llava::testing::run_llava_train;
using nlohmann::json;

namespace {

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

// LLaVA-NeXT scripts write the pinpoints as a Python literal; a YAML config can hold a real list.
TEST(Options, GridPinpointsFromYamlListOrString) {
  std::string dir = llava::testing::temp_dir("cli_pinpoints");
  std::ofstream(dir + "/list.yaml") << "image_grid_pinpoints: [[336, 672], [672, 336]]\n";
  std::ofstream(dir + "/text.yaml") << "image_grid_pinpoints: \"[(336, 672), (672, 336)]\"\n";
  const std::vector<ImageSize> want = {{336, 672}, {672, 336}};
  for (const char* file : {"/list.yaml", "/text.yaml"}) {
    Command c = parse({"--config", dir + file});
    EXPECT_EQ(parse_grid_pinpoints(c.options.image_grid_pinpoints, 336), want) << c.options.image_grid_pinpoints;
  }
  EXPECT_EQ(parse({"--image_grid_pinpoints", "(1x1),...,(6x6)"}).options.image_grid_pinpoints, "(1x1),...,(6x6)");
}

TEST(Options, BooleanForms) {
  EXPECT_TRUE(parse({"--bf16"}).options.bf16);
  EXPECT_TRUE(parse({"--bf16", "True"}).options.bf16);
  EXPECT_FALSE(parse({"--bf16=False", "--tf32", "true"}).options.bf16);
  EXPECT_TRUE(parse({"--gradient_checkpointing", "--tf32", "true"}).options.tf32);
  EXPECT_EQ(parse({"preprocess", "--version", "llava_llama_2"}).options.version, "llava_llama_2");
}

// --deepspeed as LLaVA's scripts pass it (zero2.json / zero3.json in LLaVA's shape, "auto" everywhere).
TEST(Options, DeepSpeedConfigMapsToTheZeroStageAndFlags) {
  const std::string dir = llava::testing::temp_dir("deepspeed");
  std::ofstream(dir + "/zero2.json") << R"({"fp16": {"enabled": "auto", "loss_scale": 0}, "bf16": {"enabled": "auto"},
    "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto",
    "zero_optimization": {"stage": 2, "overlap_comm": true, "contiguous_gradients": true, "sub_group_size": 1e9,
                          "reduce_bucket_size": "auto"}})";
  Command c = parse({"--deepspeed", dir + "/zero2.json", "--per_device_train_batch_size", "16", "--bf16", "True"});
  EXPECT_EQ(c.options.zero_stage, 2);
  EXPECT_EQ(c.options.per_device_train_batch_size, 16);  // "auto": the flag's value
  EXPECT_TRUE(c.options.bf16);
  ASSERT_EQ(c.notes.size(), 1u);
  EXPECT_NE(c.notes[0].find("zero_optimization.overlap_comm"), std::string::npos) << c.notes[0];
  EXPECT_NE(c.notes[0].find("zero_optimization.sub_group_size"), std::string::npos) << c.notes[0];
  // explicit values fill unset flags; bytes become MB; a value that disagrees with a given flag is an error
  std::ofstream(dir + "/explicit.json") << R"({"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2,
    "gradient_clipping": 0.5, "zero_optimization": {"stage": 1, "reduce_bucket_size": 52428800}})";
  Command e = parse({"--deepspeed", dir + "/explicit.json"});
  EXPECT_EQ(e.options.zero_stage, 1);
  EXPECT_EQ(e.options.per_device_train_batch_size, 4);
  EXPECT_EQ(e.options.gradient_accumulation_steps, 2);
  EXPECT_EQ(e.options.max_grad_norm, 0.5);
  EXPECT_EQ(e.options.ddp_bucket_cap_mb, 50);
  EXPECT_TRUE(e.notes.empty());
  EXPECT_THROW(parse({"--deepspeed", dir + "/explicit.json", "--gradient_accumulation_steps", "8"}), Error);
  EXPECT_NO_THROW(parse({"--deepspeed", dir + "/explicit.json", "--gradient_accumulation_steps", "2"}));
  // ZeRO-3 (LLaVA's finetune scripts) is not supported yet: an error naming the file and what to add; with
  // --zero_stage given, that stage runs, with one warning saying the file's stage 3 is not applied. A broken
  // file names itself.
  std::ofstream(dir + "/zero3.json") << R"({"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": "auto"}})";
  try {
    parse({"--deepspeed", dir + "/zero3.json"});
    ADD_FAILURE() << "stage 3 accepted";
  } catch (const Error& err) {
    const std::string m = err.what();
    EXPECT_NE(m.find(dir + "/zero3.json: ZeRO stage 3"), std::string::npos) << m;
    EXPECT_NE(m.find("add --zero_stage 2"), std::string::npos) << m;
  }
  for (const char* stage : {"2", "1"}) {
    Command z3 = parse({"--deepspeed", dir + "/zero3.json", "--zero_stage", stage});
    EXPECT_EQ(z3.options.zero_stage, std::stoi(stage));
    ASSERT_EQ(z3.warnings.size(), 1u);
    EXPECT_NE(z3.warnings[0].find("stage 3 is not supported yet; running --zero_stage " + std::string(stage)),
              std::string::npos) << z3.warnings[0];
  }
  EXPECT_TRUE(c.warnings.empty());  // zero2.json: nothing to warn about
  std::ofstream(dir + "/broken.json") << "{\"zero_optimization\": ";
  try {
    parse({"--deepspeed", dir + "/broken.json"});
    ADD_FAILURE() << "broken file accepted";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find(dir + "/broken.json"), std::string::npos) << err.what();
  }
}

// --torch_compile / --torch_compile_backend (LLaVA-NeXT's scripts): accepted, one note that nothing is compiled.
TEST(Options, TorchCompileIsAcceptedWithOneNote) {
  auto compile_notes = [](const Command& c) {
    int n = 0;
    for (const auto& note : c.notes) n += note.find("the C++ path needs no compilation step") != std::string::npos;
    return n;
  };
  Command c = parse({"--torch_compile", "True", "--torch_compile_backend", "inductor"});
  EXPECT_TRUE(c.options.torch_compile);
  EXPECT_EQ(c.options.torch_compile_backend, "inductor");
  EXPECT_EQ(compile_notes(c), 1);
  EXPECT_EQ(compile_notes(parse({"--torch_compile_backend", "inductor"})), 1);
  EXPECT_EQ(compile_notes(parse({"--torch_compile", "False"})), 0);
  EXPECT_EQ(compile_notes(parse({"--bf16", "True"})), 0);
}

// `plan` reads --mm_tunable_parts as the trainer does: mm_mlp_adapter alone is the pretraining stage, the three
// parts train everything, and they override the old flags.
TEST(Plan, TunablePartsDecideTheTrainableParameters) {
  auto trainable = [](const std::string& flags) {
    CommandResult r = run_llava_train("plan --model_name_or_path llava-v1.5-7b --world_size 8 " + flags);
    EXPECT_EQ(r.code, 0) << r.out;
    const size_t at = r.out.find("trainable ");
    return at == std::string::npos ? r.out : r.out.substr(at, r.out.find('\n', at) - at);
  };
  const std::string pretrain = trainable("--tune_mm_mlp_adapter True");
  std::printf("  %s\n", pretrain.c_str());
  EXPECT_EQ(trainable("--mm_tunable_parts=mm_mlp_adapter"), pretrain);
  EXPECT_EQ(trainable("--mm_tunable_parts=mm_mlp_adapter --freeze_mm_mlp_adapter True"), pretrain);
  EXPECT_EQ(trainable("--mm_tunable_parts=mm_vision_tower,mm_mlp_adapter,mm_language_model --tune_mm_mlp_adapter True"),
            "trainable 7.06 B (LLM + projector + vision tower)");
  EXPECT_EQ(trainable("--mm_tunable_parts=mm_mlp_adapter,mm_language_model"), trainable(""));
  CommandResult bad = run_llava_train("plan --model_name_or_path llava-v1.5-7b --mm_tunable_parts=mm_projector");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.out.find("unknown part 'mm_projector'"), std::string::npos) << bad.out;
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
  CommandResult v = run_llava_train("--version");
  EXPECT_EQ(v.code, 0);
  EXPECT_NE(v.out.find("llava-train"), std::string::npos);
  EXPECT_NE(v.out.find("LibTorch"), std::string::npos) << v.out;
  CommandResult h = run_llava_train("--help");
  EXPECT_EQ(h.code, 0);
  EXPECT_NE(h.out.find("--gradient_accumulation_steps"), std::string::npos);
  CommandResult bad = run_llava_train("train --lerning_rate 1");
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
  CommandResult r = run_llava_train("check-data --model_name_or_path " + d.model_dir + " --data_path " + dir + "/data.json --image_folder " + d.image_dir);
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
  CommandResult r = run_llava_train("check-data" + common);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("mix.yaml: 3 samples, 2 images, 2 ok, 1 bad"), std::string::npos) << r.out;
  // first:66% of 3 = ceil(1.98) = 2
  EXPECT_NE(r.out.find("data set 0: " + dir + "/a.json (first:66%: 2 of 3 samples): 2 samples, 1 images, 1 ok, 1 bad"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("data set 1: " + dir + "/b.jsonl (all: 1 of 1 samples): 1 samples, 1 images, 1 ok, 0 bad"),
            std::string::npos)
      << r.out;
  CommandResult p = run_llava_train("preprocess" + common + " --output " + dir + "/pre.jsonl");
  EXPECT_EQ(p.code, 0) << p.out;
  EXPECT_NE(p.out.find("a.json (first:66%: 2 of 3 samples): 2 samples, 1 ok, 1 bad"), std::string::npos) << p.out;
  std::ofstream(dir + "/gone.yaml") << "datasets:\n  - json_path: gone.json\n";
  CommandResult g = run_llava_train("check-data --model_name_or_path " + d.model_dir + " --data_path " + dir + "/gone.yaml");
  EXPECT_EQ(g.code, 1);
  EXPECT_NE(g.out.find("gone.yaml: datasets[0] (gone.json): no such file"), std::string::npos) << g.out;
}

TEST(Cli, PreprocessMatchesFixture) {
  LLAVA_REQUIRE_FIXTURES();
  std::string f = llava::testing::fixture("llava-tiny");
  std::string out = llava::testing::temp_dir("cli_pre") + "/pre.jsonl";
  CommandResult r = run_llava_train("preprocess --model_name_or_path " + f + " --data_path " + f + "/data.json --image_folder " + f +
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

// Image paths that are not decodable images (issue #10: "image": "." used to end check-data, preprocess and
// train with std::bad_alloc): each is a bad sample with its reason, the run goes on.
TEST(Cli, ImageFilesThatAreNotImagesAreBadSamples) {
  const auto& d = llava::testing::tiny_data_dir();
  const std::string dir = llava::testing::temp_dir("cli_bad_images");
  ASSERT_EQ(::mkfifo((dir + "/fifo.png").c_str(), 0600), 0);
  std::ofstream(dir + "/empty.png").close();
  const std::string png = llava::testing::read_file(d.image_dir + "/a.png");
  std::ofstream(dir + "/cut.png", std::ios::binary) << png.substr(0, png.size() / 2);
  std::ofstream(dir + "/text.jpg") << "not an image at all";
  auto sample = [&](const std::string& id, const std::string& image) {
    return R"({"id": ")" + id + R"(", "image": ")" + image +
           R"(", "conversations": [{"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "red"}]})";
  };
  std::ofstream(dir + "/data.json") << "[" << sample("good", d.image_dir + "/a.png") << ", " << sample("dot", ".")
                                    << ", " << sample("folder", dir) << ", " << sample("fifo", dir + "/fifo.png")
                                    << ", " << sample("empty", dir + "/empty.png") << ", " << sample("cut", dir + "/cut.png")
                                    << ", " << sample("text", dir + "/text.jpg") << "]";
  const std::string common = " --model_name_or_path " + d.model_dir + " --data_path " + dir + "/data.json";
  CommandResult check = run_llava_train("check-data" + common);
  std::printf("%s", check.out.c_str());
  EXPECT_EQ(check.code, 1) << check.out;  // bad samples found: 1, not a crash (134)
  EXPECT_NE(check.out.find("7 samples, 1 images, 1 ok, 6 bad"), std::string::npos) << check.out;
  EXPECT_NE(check.out.find("not_a_file: 3"), std::string::npos) << check.out;
  EXPECT_NE(check.out.find("empty_image_file: 1"), std::string::npos) << check.out;
  EXPECT_NE(check.out.find("image_decode: 2"), std::string::npos) << check.out;
  for (const char* reason : {"'.' is a directory", "is a FIFO", "is empty (0 bytes)", "truncated PNG", "not an image"})
    EXPECT_NE(check.out.find(reason), std::string::npos) << reason;
  EXPECT_EQ(check.out.find("bad_alloc"), std::string::npos) << check.out;

  CommandResult pre = run_llava_train("preprocess" + common + " --output " + dir + "/pre.jsonl --save_pixels " + dir + "/px.safetensors");
  EXPECT_EQ(pre.code, 0) << pre.out;
  std::ifstream in(dir + "/pre.jsonl");
  std::string line;
  int ok = 0, errors = 0;
  while (std::getline(in, line)) (json::parse(line)["status"] == "ok" ? ok : errors)++;
  EXPECT_EQ(ok, 1);
  EXPECT_EQ(errors, 6);
  auto pixels = llava::SafetensorsFile::open(dir + "/px.safetensors");
  ASSERT_EQ(pixels->tensors().size(), 1u);  // only the good sample has pixel values
  EXPECT_EQ(pixels->tensors()[0].name, "sample0.pixel_values");
  EXPECT_EQ(pixels->tensors()[0].shape, (std::vector<int64_t>{1, 3, 28, 28}));

  // The training data loader (bench-data runs it without a model): bad samples skipped, not fatal.
  CommandResult bench = run_llava_train("bench-data" + common + " --per_device_train_batch_size 2");
  EXPECT_EQ(bench.code, 0) << bench.out;
  EXPECT_NE(bench.out.find("\"skipped\":6"), std::string::npos) << bench.out;
}

// --save_pixels writes what the model receives for each sample; on the fixture, exactly its reference
// pixel_values (PIL + CLIPImageProcessor), tensor names, shapes and float32 bits.
TEST(Cli, PreprocessSavePixelsMatchesFixture) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string f = llava::testing::fixture("llava-tiny");
  const std::string dir = llava::testing::temp_dir("cli_save_pixels");
  CommandResult r = run_llava_train("preprocess --model_name_or_path " + f + " --data_path " + f + "/data.json --image_folder " + f +
                    "/images --output " + dir + "/pre.jsonl --save_pixels " + dir + "/pixels.safetensors");
  ASSERT_EQ(r.code, 0) << r.out;
  auto got = llava::SafetensorsFile::open(dir + "/pixels.safetensors");
  auto want = llava::SafetensorsFile::open(f + "/expected/pixel_values.safetensors");
  ASSERT_EQ(got->tensors().size(), want->tensors().size());
  size_t values = 0;
  for (const auto& w : want->tensors()) {
    const auto* g = got->find(w.name);
    ASSERT_NE(g, nullptr) << w.name;
    ASSERT_EQ(g->dtype, llava::DType::F32) << w.name;
    ASSERT_EQ(g->shape, w.shape) << w.name;
    ASSERT_EQ(w.dtype, llava::DType::F32) << w.name;
    const size_t bytes = static_cast<size_t>(w.numel()) * sizeof(float);
    size_t differ = 0;
    for (size_t k = 0; k < bytes; k += 4) differ += std::memcmp(got->data(*g) + k, want->data(w) + k, 4) != 0;
    std::printf("[ save_pixels ] %s [%lld, 3, %lld, %lld]: %zu of %lld values differ\n", w.name.c_str(),
                static_cast<long long>(w.shape[0]), static_cast<long long>(w.shape[2]),
                static_cast<long long>(w.shape[3]), differ, static_cast<long long>(w.numel()));
    EXPECT_EQ(differ, 0u) << w.name;
    values += w.numel();
  }
  EXPECT_EQ(values, 9u * 3 * 56 * 56);  // 9 images in the fixture's 6 samples
}

// anyres from the llava-next-tiny config.json: preprocess reports each image's size, tiles and positions.
// An HF LLaVA directory embeds its tower, and the model ignores --vision_tower (LLaVA-NeXT's launch lines pass
// one with every model): the image preprocessor must come from the directory too, not from the flag's folder,
// or the model sees pixels normalised for another tower.
TEST(Cli, HfLlavaDirectoryKeepsItsOwnPreprocessorWhateverVisionTowerSays) {
  LLAVA_REQUIRE_FIXTURES();
  const std::string f = llava::testing::fixture("llava-tiny"), tower = llava::testing::temp_dir("cli_tower");
  json pre = json::parse(llava::testing::read_file(f + "/preprocessor_config.json"));
  pre["image_mean"] = {0.5, 0.5, 0.5};
  pre["image_std"] = {0.5, 0.5, 0.5};
  std::ofstream(tower + "/preprocessor_config.json") << pre.dump();
  auto pixels_of = [&](const std::string& extra, const std::string& name) {
    const std::string out = tower + "/" + name;
    CommandResult r = run_llava_train("preprocess --model_name_or_path " + f + " --data_path " + f + "/data.json --image_folder " + f +
                      "/images --save_pixels " + out + ".safetensors --output " + out + ".jsonl" + extra);
    EXPECT_EQ(r.code, 0) << r.out;
    return llava::testing::read_file(out + ".safetensors");
  };
  const std::string own = pixels_of("", "own"), flagged = pixels_of(" --vision_tower " + tower, "flagged");
  ASSERT_FALSE(own.empty());
  EXPECT_EQ(own, flagged) << "--vision_tower's preprocessor was used for an HF LLaVA directory";
}

TEST(Cli, PreprocessAndCheckDataReportAnyresPositions) {
  LLAVA_REQUIRE_FIXTURES();
  std::string f = llava::testing::fixture("llava-next-tiny");
  const std::string data = " --model_name_or_path " + f + " --data_path " + f + "/data.json --image_folder " + f +
                           "/images --version mistral_instruct";
  std::string out = llava::testing::temp_dir("cli_pre_next") + "/pre.jsonl";
  CommandResult r = run_llava_train("preprocess" + data + " --output " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  json expected = json::parse(llava::testing::read_file(f + "/expected/samples.json"))["samples"];
  std::ifstream in(out);
  std::string line;
  size_t i = 0;
  for (; std::getline(in, line); ++i) {
    json got = json::parse(line);
    const json& e = expected[i];
    EXPECT_EQ(got["input_ids"], e["input_ids"]) << "sample " << i;
    EXPECT_EQ(got["length_with_images"], e["merged_seq_len"]) << "sample " << i;
    if (e["images"].empty()) {
      EXPECT_FALSE(got.contains("image_positions")) << "sample " << i;
      continue;
    }
    EXPECT_EQ(got["image_sizes"], e["image_sizes"]) << "sample " << i;
    for (size_t k = 0; k < e["images"].size(); ++k) {
      EXPECT_EQ(got["image_tiles"][k], e["images"][k]["num_crops_incl_base"]) << "sample " << i;
      EXPECT_EQ(got["image_positions"][k], e["images"][k]["merged_len"]) << "sample " << i;
    }
  }
  EXPECT_EQ(i, 6u);
  r = run_llava_train("check-data" + data);
  EXPECT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("anyres: 34 tiles, up to 88 positions per image (at most 88"), std::string::npos) << r.out;
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
    CommandResult r = run_llava_train("tokenize --model_name_or_path " + llava::testing::fixture("llava-tiny") + " --legacy " +
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

// --add_special_tokens (HF's meaning) on both tokenizer kinds, and tokenizer.json folders through the CLI.
TEST(Cli, TokenizeAddSpecialTokensAndBpe) {
  LLAVA_REQUIRE_FIXTURES();
  auto ids_of = [](const std::string& args) {
    CommandResult r = run_llava_train("tokenize " + args);
    EXPECT_EQ(r.code, 0) << r.out;
    return r.code == 0 ? json::parse(r.out)["ids"] : json();
  };
  const std::string spm = llava::testing::fixture("llava-tiny");
  const std::string llama3 = llava::testing::fixture("bpe-tokenizer/llama3");
  const std::string qwen2 = llava::testing::fixture("bpe-tokenizer/qwen2");
  // SentencePiece: BOS by default (as before), none with false. "</s>USER:" -> [1,] 2, 11889, 29901.
  EXPECT_EQ(ids_of("--model_name_or_path " + spm + " --text '</s>USER:'"), json({1, 2, 11889, 29901}));
  EXPECT_EQ(ids_of("--model_name_or_path " + spm + " --text '</s>USER:' --add_special_tokens false"),
            json({2, 11889, 29901}));
  // Llama-3 (bpe-tokenizer README): <|begin_of_text|> 128000 added by default; Qwen adds nothing.
  EXPECT_EQ(ids_of("--model_name_or_path " + llama3 + " --text 'Hello world'"), json({128000, 9906, 1917}));
  EXPECT_EQ(ids_of("--model_name_or_path " + llama3 + " --text 'Hello world' --add_special_tokens=false"),
            json({9906, 1917}));
  EXPECT_EQ(ids_of("--model_name_or_path " + qwen2 + " --text 'Hello world'"), json({9707, 1879}));
  // image_token lines and pieces: "<image>\nWhat is in the image?" (README item 8).
  const std::string dir = llava::testing::temp_dir("cli_bpe_tok");
  std::ofstream(dir + "/in.jsonl") << json{{"text", "<image>\nWhat is in the image?"}, {"image_token", true}}.dump()
                                   << "\n";
  CommandResult r = run_llava_train("tokenize --model_name_or_path " + qwen2 + " --input " + dir + "/in.jsonl");
  ASSERT_EQ(r.code, 0) << r.out;
  const json got = json::parse(r.out);
  EXPECT_EQ(got["ids"], json({-200, 198, 3838, 374, 304, 279, 2168, 30}));
  EXPECT_EQ(got["pieces"][0], "<image>");
  EXPECT_EQ(got["pieces"][1], "\u010a");  // Ċ
  // A folder with neither tokenizer file: the error names it.
  r = run_llava_train("tokenize --model_name_or_path " + dir + " --text x");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find(dir), std::string::npos) << r.out;
}
