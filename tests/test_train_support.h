#pragma once
// Helpers for the trainer/eval tests: a tiny random LLaVA model over the self-made tokenizer of
// test_data_support.h (runs without ../shared), small data sets, fixture options, running the binary.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llava/model/checkpoint.h"
#include "llava/model/config.h"
#include "llava/options.h"
#include "llava/safetensors.h"
#include "llava/train/trainer.h"
#include "test_data_support.h"
#include "llava/fs_util.h"

namespace llava::testing {

// A temporary folder for one training test (temp_dir: removed when all tests are done).
inline std::string train_tmp(const std::string& name) { return temp_dir(name); }

// A ~60k-parameter LLaVA: CLIP 2x16 over 28 px images (4 patches), LLaMA 2x32 (GQA 4/2) over the 300-piece
// tokenizer, mlp2x_gelu projector. Written once per test binary.
inline LlavaConfig tiny_config() {
  LlavaConfig c;
  c.vision.hidden_size = 16;
  c.vision.intermediate_size = 32;
  c.vision.num_hidden_layers = 2;
  c.vision.num_attention_heads = 2;
  c.vision.image_size = 28;
  c.vision.patch_size = 14;
  c.vision.projection_dim = 16;
  c.text.vocab_size = 300;
  c.text.hidden_size = 32;
  c.text.intermediate_size = 64;
  c.text.num_hidden_layers = 2;
  c.text.num_attention_heads = 4;
  c.text.num_key_value_heads = 2;
  c.text.max_position_embeddings = 256;
  c.text.rms_norm_eps = 1e-5;
  c.text.initializer_range = 0.2;  // logits of O(1): gradients with some structure
  c.text.pad_token_id = 0;
  c.projector_type = "mlp2x_gelu";
  c.vision_feature_layer = -2;
  c.image_token_index = 299;
  return c;
}

inline const std::string& tiny_model_dir() {
  static std::string dir = [] {
    std::string d = train_tmp("tiny_model") + "/model";
    SaveOptions so;
    so.tokenizer_source_dir = tiny_data_dir().model_dir;
    write_random_model_dir(tiny_config(), d, 7, so);
    return d;
  }();
  return dir;
}

// kind per sample: 'i' one image, 'I' two images, 't' text only, 'x' an unreadable image (a bad sample).
inline std::string write_tiny_data(const std::string& dir, const std::string& kinds) {
  const char* colours[] = {"red", "green", "blue"};
  const char* shapes[] = {"circle", "square", "triangle"};
  nlohmann::json data = nlohmann::json::array();
  for (size_t i = 0; i < kinds.size(); ++i) {
    const char k = kinds[i];
    nlohmann::json s = {{"id", "t" + std::to_string(i)}};
    std::string q = std::string("what colour is the ") + shapes[i % 3] + "?";
    if (k == 'i') {
      s["image"] = i % 2 ? "a.png" : "b.png";
      q = "<image>\n" + q;
    } else if (k == 'I') {
      s["image"] = {"a.png", "b.png"};
      q = "<image>\n<image>\nwhat is the first image and the second image?";
    } else if (k == 'x') {
      s["image"] = "not_an_image.png";
      q = "<image>\n" + q;
    }
    std::string a = std::string("the ") + shapes[(i + 1) % 3] + " is " + colours[i % 3] + ".";
    if (i % 3 == 2) a += " the square is green and the circle is blue.";
    s["conversations"] = {{{"from", "human"}, {"value", q}}, {{"from", "gpt"}, {"value", a}}};
    data.push_back(s);
  }
  const std::string path = dir + "/data.json";
  std::ofstream(path) << data.dump(1);
  return path;
}

// Options for a tiny-model run: batch 2, file order, constant lr, logging every step, no checkpoints.
inline Options tiny_options_for(const std::string& data_path, const std::string& output_dir,
                                const std::string& model_dir, const std::string& image_dir) {
  Options o;
  o.model_name_or_path = model_dir;
  o.data_path = data_path;
  o.image_folder = image_dir;
  o.output_dir = output_dir;
  o.per_device_train_batch_size = 2;
  o.shuffle = false;
  o.max_steps = 4;
  o.learning_rate = 1e-2;
  o.lr_scheduler_type = "constant";
  o.logging_steps = 1;
  o.save_steps = 0;
  o.model_max_length = 256;
  o.seed = 3;
  return o;
}
inline Options tiny_options(const std::string& data_path, const std::string& output_dir) {
  return tiny_options_for(data_path, output_dir, tiny_model_dir(), tiny_data_dir().image_dir);
}

inline std::string fixture_dir() { return fixture("llava-tiny"); }

// README item 10's hyper-parameters, over a fixture directory laid out as llava-tiny's (data.json, images/):
// llava-tiny's, llava-next-tiny's and llava-interleave-tiny's trajectories were all made with them.
inline Options fixture_options_for(const std::string& dir, const std::string& output_dir, bool pretrain) {
  Options o;
  o.model_name_or_path = dir;
  o.data_path = dir + "/data.json";
  o.image_folder = dir + "/images";
  o.output_dir = output_dir;
  o.per_device_train_batch_size = 2;
  o.shuffle = false;
  o.max_steps = 6;
  o.learning_rate = 1e-3;
  o.lr_scheduler_type = "cosine";
  o.warmup_steps = 1;
  o.max_grad_norm = 1.0;
  o.weight_decay = 0.0;
  o.logging_steps = 1;
  o.save_steps = 0;
  o.tune_mm_mlp_adapter = pretrain;
  return o;
}
inline Options fixture_options(const std::string& output_dir, bool pretrain) {
  return fixture_options_for(fixture_dir(), output_dir, pretrain);
}

// A model directory loaded for evaluation (eval mode: no dropout).
inline LlavaForCausalLM load_eval_model(const std::string& dir) {
  LoadedLlava l = load_llava(dir);
  l.model->eval();
  return l.model;
}

// A run's steps against a fixture's trajectory (expected/train_*.json, made by HF's Trainer): step by step the
// same batch, loss within loss_tol, grad_norm within 1e-3 relative, lr within 1e-9 (each step printed, prefixed
// by `label`). Returns the largest differences.
struct TrajectoryDiff {
  double loss = 0, grad_norm = 0, learning_rate = 0;
};
inline TrajectoryDiff expect_trajectory(const nlohmann::json& expected, const std::vector<StepRecord>& steps,
                                        double loss_tol, const std::string& label) {
  TrajectoryDiff worst;
  EXPECT_EQ(steps.size(), expected["steps"].size());
  for (size_t i = 0; i < std::min(steps.size(), expected["steps"].size()); ++i) {
    const nlohmann::json& e = expected["steps"][i];
    const StepRecord& s = steps[i];
    EXPECT_EQ(s.sample_indices, e["batch_sample_indices"].get<std::vector<int64_t>>()) << "step " << i + 1;
    const double dl = std::abs(s.loss - e["loss"].get<double>());
    const double dg = std::abs(s.grad_norm - e["grad_norm"].get<double>()) / e["grad_norm"].get<double>();
    const double dlr = std::abs(s.learning_rate - e["learning_rate"].get<double>());
    std::printf("  %s step %zu: loss %.6f (expected %.6f, diff %.1e)  grad_norm %.6f (rel diff %.1e)  lr %.9g (diff %.1e)\n",
                label.c_str(), i + 1, s.loss, e["loss"].get<double>(), dl, s.grad_norm, dg, s.learning_rate, dlr);
    EXPECT_LE(dl, loss_tol) << "step " << i + 1;
    EXPECT_LE(dg, 1e-3) << "step " << i + 1;
    EXPECT_LE(dlr, 1e-9) << "step " << i + 1;
    worst.loss = std::max(worst.loss, dl);
    worst.grad_norm = std::max(worst.grad_norm, dg);
    worst.learning_rate = std::max(worst.learning_rate, dlr);
  }
  return worst;
}

// All tensors of a safetensors file or model directory as fp32 CPU tensors.
inline std::map<std::string, torch::Tensor> read_tensors(const std::string& path_or_dir) {
  SafetensorsCheckpoint ck = std::filesystem::is_directory(path_or_dir) ? SafetensorsCheckpoint::open_dir(path_or_dir)
                                                                        : SafetensorsCheckpoint::open_file(path_or_dir);
  std::map<std::string, torch::Tensor> out;
  for (const auto& name : ck.names()) {
    const auto* e = ck.find(name);
    std::vector<float> v = e->file->to_float(*e->info);
    out[name] = torch::from_blob(v.data(), e->info->shape, torch::kFloat).clone();
  }
  return out;
}

struct RunResult {
  int code = -1;
  std::string out, err;
};

// Runs a shell command; stdout and stderr separately (stderr through a file next to the test's temp data).
inline RunResult run_shell(const std::string& command) {
  static int n = 0;
  static const std::string dir = train_tmp("run_err");
  const std::string err_file = dir + "/err" + std::to_string(++n) + ".txt";
  const CommandResult c = run_shell_command(command + " 2>" + err_file);
  RunResult r;
  r.code = c.code;
  r.out = c.out;
  r.err = read_file(err_file);
  return r;
}

// Runs the built llava-train with args.
inline RunResult run_binary(const std::string& args, const std::string& env = "") {
  return run_shell(env + " " + std::string(LLAVA_BINARY) + " " + args);
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string line;
  while (std::getline(ss, line))
    if (!line.empty()) out.push_back(line);
  return out;
}

}  // namespace llava::testing
