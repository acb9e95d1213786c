// Every file the binary reads, damaged (empty, cut short, random bytes with invalid UTF-8, JSON of the wrong
// types, absurd sizes in a safetensors header): `llava-train` ends with exit code 1 and an "error:" line that
// names the file, never an abort; stderr stays valid UTF-8; a resume from a damaged checkpoint touches no
// other checkpoint. (Issue #10: one error contract.)
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "llava/text_util.h"
#include "test_train_support.h"

using namespace llava;
using namespace llava::testing;
namespace fs = std::filesystem;

namespace {

struct Damage {
  const char* name;
  std::function<std::string(const std::string&)> apply;  // original bytes -> damaged bytes
};

std::string random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  s[0] = static_cast<char>(0xC3);  // invalid UTF-8 for sure (a lead byte followed by garbage)
  s[1] = '(';
  return s;
}

// JSON whose values have the wrong types: every number becomes a string, every string or boolean a number.
std::string wrong_types(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return "[]";
  std::function<void(nlohmann::json&)> flip = [&](nlohmann::json& v) {
    if (v.is_object() || v.is_array()) {
      for (auto& x : v) flip(x);
    } else if (v.is_number()) {
      v = "seven";
    } else if (v.is_string() || v.is_boolean()) {
      v = 7;
    }
  };
  flip(j);
  return j.dump();
}

std::vector<Damage> damages(bool json, bool safetensors) {
  std::vector<Damage> d = {
      {"empty", [](const std::string&) { return std::string(); }},
      {"cut in half", [](const std::string& s) { return s.substr(0, s.size() / 2); }},
      {"cut to 7 bytes", [](const std::string& s) { return s.substr(0, 7); }},
      {"random bytes", [](const std::string& s) { return random_bytes(std::max<size_t>(64, s.size() / 4), 5); }},
  };
  if (json) d.push_back({"wrong types", wrong_types});
  if (json) d.push_back({"a list, not an object", [](const std::string&) { return std::string("[1, 2, 3]"); }});
  if (safetensors) {
    d.push_back({"header length 2^62", [](const std::string& s) {
                   std::string t = s;
                   const uint64_t n = uint64_t{1} << 62;
                   for (int i = 0; i < 8; ++i) t[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
                   return t;
                 }});
    d.push_back({"offsets past the end", [](const std::string& s) {
                   std::string t = s;
                   const size_t at = t.find("\"data_offsets\":[");
                   if (at != std::string::npos) t.replace(at + 16, 1, "9");  // the first offset grows by 9 x 10^k
                   return t;
                 }});
  }
  return d;
}

// Runs the command with `file` damaged in a copy of `dir` (the copy is the argument's folder): exit 1, an
// error naming the file, no abort.
void expect_clear_error(const std::string& what, const std::string& file_name, const std::string& err, int code) {
  std::printf("  %-58s exit %d: %s\n", what.c_str(), code, lines_of(err).empty() ? "" : lines_of(err).back().c_str());
  EXPECT_EQ(code, 1) << what << "\n" << err;
  EXPECT_NE(err.find("error: "), std::string::npos) << what << "\n" << err;
  EXPECT_NE(err.find(file_name), std::string::npos) << what << ": the message does not name " << file_name << "\n" << err;
  EXPECT_EQ(err.find("terminate called"), std::string::npos) << what;
  EXPECT_EQ(printable(err), err) << what << ": stderr is not printable UTF-8";
}

std::string train_args(const std::string& model, const std::string& data, const std::string& out) {
  return "train --model_name_or_path " + model + " --data_path " + data + " --image_folder " +
         tiny_data_dir().image_dir + " --output_dir " + out + " --per_device_train_batch_size 2 --max_steps 1"
         " --save_steps 0 --logging_steps 1 --model_max_length 256";
}

std::string tree_digest(const std::string& dir) {
  std::string all;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) all += e.path().string() + ":" + read_file(e.path().string()) + "\n";
  return all;
}

}  // namespace

// The model directory's files and the YAML config, each damaged every way.
TEST(BadFiles, ModelFilesAndConfigGiveClearErrors) {
  const std::string base = train_tmp("bad_files");
  const std::string data = write_tiny_data(base, "iItI");
  std::ofstream(base + "/good.yaml") << "learning_rate: 1e-3\nper_device_train_batch_size: 2\n";
  struct Target {
    std::string file;  // in the model directory, or "YAML"
    bool json, safetensors;
  };
  const std::vector<Target> targets = {{"config.json", true, false},          {"preprocessor_config.json", true, false},
                                       {"tokenizer_config.json", true, false}, {"tokenizer.model", false, false},
                                       {"model.safetensors", false, true},     {"YAML", false, false}};
  int n = 0;
  for (const Target& t : targets) {
    for (const Damage& d : damages(t.json, t.safetensors)) {
      const std::string model = base + "/m" + std::to_string(++n);
      fs::copy(tiny_model_dir(), model, fs::copy_options::recursive);
      std::string args = train_args(model, data, base + "/out" + std::to_string(n));
      std::string damaged;
      if (t.file == "YAML") {
        damaged = base + "/c" + std::to_string(n) + ".yaml";
        std::ofstream(damaged, std::ios::binary) << d.apply(read_file(base + "/good.yaml"));
        if (std::string(d.name) == "empty") continue;  // an empty YAML file is a valid, empty config
        args += " --config " + damaged;
      } else {
        damaged = model + "/" + t.file;
        const std::string bytes = read_file(damaged);
        std::ofstream(damaged, std::ios::binary | std::ios::trunc) << d.apply(bytes);
      }
      RunResult r = run_binary(args, "OMP_NUM_THREADS=1");
      if (r.code == 0 && t.file == "tokenizer_config.json" && std::string(d.name) == "wrong types") {
        ADD_FAILURE() << "wrong types in tokenizer_config.json accepted";
        continue;
      }
      expect_clear_error(t.file + ", " + d.name, fs::path(damaged).filename().string(), r.err, r.code);
    }
  }
}

// A checkpoint's files damaged: a resume names the file and changes no checkpoint (the damaged one stays as
// it was, the older one untouched).
TEST(BadFiles, DamagedCheckpointFilesGiveClearErrorsAndTouchNoCheckpoint) {
  const std::string base = train_tmp("bad_checkpoint");
  const std::string data = write_tiny_data(base, "iItIiItI");
  const std::string out = base + "/run";
  RunResult first = run_binary(train_args(tiny_model_dir(), data, out) + " --max_steps 3 --save_steps 1", "OMP_NUM_THREADS=1");
  ASSERT_EQ(first.code, 0) << first.err;
  ASSERT_TRUE(fs::exists(out + "/checkpoint-1/trainer_state.json"));
  ASSERT_TRUE(fs::exists(out + "/checkpoint-2/trainer_state.json"));
  const std::vector<std::pair<std::string, bool>> files = {
      {"trainer_state.json", true}, {"optimizer.json", true},        {"optimizer.rank0.safetensors", false},
      {"rng_state.safetensors", false}, {"model.safetensors", false}, {"config.json", true}};
  int n = 0;
  for (const auto& [file, json] : files) {
    for (const Damage& d : damages(json, file.find(".safetensors") != std::string::npos)) {
      const std::string run = base + "/r" + std::to_string(++n);
      fs::copy(out, run, fs::copy_options::recursive);
      const std::string target = run + "/checkpoint-2/" + file;
      const std::string bytes = read_file(target);
      std::ofstream(target, std::ios::binary | std::ios::trunc) << d.apply(bytes);
      const std::string before = tree_digest(run + "/checkpoint-1") + tree_digest(run + "/checkpoint-2");
      RunResult r = run_binary(train_args(tiny_model_dir(), data, run) + " --max_steps 3 --save_steps 1"
                                   " --resume_from_checkpoint " + run + "/checkpoint-2",
                               "OMP_NUM_THREADS=1");
      expect_clear_error("checkpoint-2/" + file + ", " + d.name, file, r.err, r.code);
      EXPECT_EQ(tree_digest(run + "/checkpoint-1") + tree_digest(run + "/checkpoint-2"), before)
          << file << ", " << d.name << ": a checkpoint changed";
      EXPECT_FALSE(fs::exists(run + "/checkpoint-3")) << file << ", " << d.name;
    }
  }
}

// A model directory with its weights as a torch.save'd pytorch_model.bin (HF names), damaged: a clear error.
TEST(BadFiles, TorchBinPicklesGiveClearErrors) {
  const std::string base = train_tmp("bad_bin");
  const std::string data = write_tiny_data(base, "iItI");
  const std::string good = base + "/good";
  fs::copy(tiny_model_dir(), good, fs::copy_options::recursive);
  fs::remove(good + "/model.safetensors");
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& [name, t] : read_tensors(tiny_model_dir())) dict.insert(name, t);
  const std::vector<char> pickle = torch::pickle_save(dict);
  std::ofstream(good + "/pytorch_model.bin", std::ios::binary).write(pickle.data(), static_cast<std::streamsize>(pickle.size()));
  RunResult ok = run_binary(train_args(good, data, base + "/out_good"), "OMP_NUM_THREADS=1");
  ASSERT_EQ(ok.code, 0) << "the undamaged .bin model must train:\n" << ok.err;
  int n = 0;
  for (const Damage& d : damages(false, false)) {
    const std::string model = base + "/m" + std::to_string(++n);
    fs::copy(good, model, fs::copy_options::recursive);
    const std::string file = model + "/pytorch_model.bin";
    const std::string bytes = read_file(file);
    std::ofstream(file, std::ios::binary | std::ios::trunc) << d.apply(bytes);
    RunResult r = run_binary(train_args(model, data, base + "/out" + std::to_string(n)), "OMP_NUM_THREADS=1");
    expect_clear_error(std::string("pytorch_model.bin, ") + d.name, "pytorch_model.bin", r.err, r.code);
  }
}
