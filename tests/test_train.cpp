// The training loop: the llava-tiny fixture trajectories (HF Trainer + LLaVA, README item 10), and the loop's
// promises on a tiny random model: accumulation, exact resume, atomic checkpoints, LoRA, gradient
// checkpointing, the NaN guard, bf16 master weights; and the `train` / `init-model` command lines.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/pipeline.h"
#include "llava/train/loader.h"
#include "llava/train/lora.h"
#include "llava/train/state.h"
#include "llava/train/trainer.h"
#include "test_train_support.h"

extern char** environ;

using namespace llava;
using namespace llava::testing;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>();
}

// Fixture trajectory check: per step loss (abs 2e-3), grad_norm (rel 1e-3), lr (abs 1e-9); final projector (abs 1e-3).
void check_fixture_trajectory(bool pretrain) {
  const std::string name = pretrain ? "pretrain" : "finetune";
  json expected = json::parse(read_file(fixture_dir() + "/expected/train_" + name + ".json"));
  const std::string out = train_tmp("fixture_" + name);
  TrainResult r = train(fixture_options(out, pretrain));
  ASSERT_EQ(r.exit_code, 0) << r.message;
  ASSERT_EQ(r.steps.size(), 6u);
  const TrajectoryDiff worst = expect_trajectory(expected, r.steps, 2e-3, name);
  auto want = read_tensors(fixture_dir() + "/expected/train_" + name + "_final_projector.safetensors");
  auto got = read_tensors(out);  // the final model directory
  double max_proj = 0;
  for (const auto& [tensor, value] : want) {
    ASSERT_TRUE(got.count(tensor)) << tensor;
    const double d = max_abs_diff(got[tensor], value);
    EXPECT_LE(d, 1e-3) << tensor;
    max_proj = std::max(max_proj, d);
  }
  std::printf("  %s: max |loss diff| %.2e, max rel grad_norm diff %.2e, max |lr diff| %.2e, max |projector diff| %.2e\n",
              name.c_str(), worst.loss, worst.grad_norm, worst.learning_rate, max_proj);

  // What did not train stayed put: vision always; the LLM in the projector-only stage.
  auto initial = read_tensors(fixture_dir());
  for (const auto& [tensor, value] : initial) {
    const bool trainable = tensor.rfind("multi_modal_projector.", 0) == 0 ||
                           (!pretrain && tensor.rfind("language_model.", 0) == 0);
    if (!trainable) {
      EXPECT_TRUE(torch::equal(got.at(tensor), value)) << tensor << " changed but is frozen";
    }
  }
  if (pretrain) {
    auto proj = read_tensors(out + "/mm_projector.safetensors");  // original LLaVA names
    EXPECT_TRUE(torch::equal(proj.at("model.mm_projector.0.weight"), got.at("multi_modal_projector.linear_1.weight")));
    EXPECT_TRUE(torch::equal(proj.at("model.mm_projector.2.bias"), got.at("multi_modal_projector.linear_2.bias")));
  }
  // HF's log lines: the lr after the scheduler step and the 4-decimal loss (hf_logged_* in the fixture).
  json state = json::parse(read_file(out + "/trainer_state.json"));
  for (size_t i = 0; i < 6; ++i) {
    const json& e = expected["steps"][i];
    const json& h = state["log_history"][i];
    EXPECT_EQ(h["step"].get<int64_t>(), static_cast<int64_t>(i + 1));
    EXPECT_NEAR(h["learning_rate"].get<double>(), e["hf_logged_learning_rate"].get<double>(), 1e-12);
    EXPECT_NEAR(h["loss"].get<double>(), e["hf_logged_loss"].get<double>(), 1.00001e-4);
  }
}

// Runs the tiny model with options tweaked by `tweak`.
TrainResult tiny_run(const std::string& kinds, const std::string& out, const std::function<void(Options&)>& tweak,
                     const TrainHooks& hooks = {}) {
  fs::create_directories(out);
  Options o = tiny_options(write_tiny_data(out, kinds), out);
  tweak(o);
  return train(o, hooks);
}

std::map<std::string, torch::Tensor> final_weights(const std::string& out) { return read_tensors(out); }

}  // namespace

// ------------------------------------------------------------------------------------------ fixture

TEST(TrainFixture, FinetuneTrajectoryMatchesHfTrainer) {
  LLAVA_REQUIRE_FIXTURES();
  check_fixture_trajectory(false);
}

TEST(TrainFixture, PretrainTrajectoryMatchesHfTrainer) {
  LLAVA_REQUIRE_FIXTURES();
  check_fixture_trajectory(true);
}

// ------------------------------------------------------------------------------------------ the loop

TEST(TrainLoop, AccumulationGivesTheUpdateOfTheLargerBatch) {
  // 4 x 1 and 2 x 2 see the same samples per step; with the loss normalised over all the step's tokens the
  // update is the same up to fp32 rounding (padding differs, masked out).
  const std::string kinds = "iItiIitI";
  const std::string out_a = train_tmp("accum_a");
  auto a = tiny_run(kinds, out_a, [](Options& o) {
    o.per_device_train_batch_size = 4;
    o.max_steps = 2;
  });
  const std::string out_b = train_tmp("accum_b");
  auto b = tiny_run(kinds, out_b, [](Options& o) {
    o.per_device_train_batch_size = 2;
    o.gradient_accumulation_steps = 2;
    o.max_steps = 2;
  });
  ASSERT_EQ(a.steps.size(), 2u);
  ASSERT_EQ(b.steps.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a.steps[i].sample_indices, b.steps[i].sample_indices);
    EXPECT_EQ(a.steps[i].num_target_tokens, b.steps[i].num_target_tokens);
    std::printf("  step %zu: loss %.9f vs %.9f, grad_norm %.9f vs %.9f\n", i + 1, a.steps[i].loss, b.steps[i].loss,
                a.steps[i].grad_norm, b.steps[i].grad_norm);
    EXPECT_NEAR(a.steps[i].loss, b.steps[i].loss, 1e-5 * a.steps[i].loss);
    EXPECT_NEAR(a.steps[i].grad_norm, b.steps[i].grad_norm, 1e-5 * a.steps[i].grad_norm);
  }
  auto wa = final_weights(out_a);
  auto wb = final_weights(out_b);
  double worst = 0;
  for (const auto& [name, t] : wa) worst = std::max(worst, max_abs_diff(t, wb.at(name)));
  std::printf("  max |weight diff| after 2 steps: %.2e\n", worst);
  EXPECT_LE(worst, 1e-5);

  // --average_tokens_across_devices false: the mean of the micro-batch means (LLaVA-1.5), a different loss
  // when the micro-batches have different token counts.
  auto c = tiny_run(kinds, train_tmp("accum_c"), [](Options& o) {
    o.per_device_train_batch_size = 2;
    o.gradient_accumulation_steps = 2;
    o.max_steps = 1;
    o.average_tokens_across_devices = false;
  });
  EXPECT_GT(std::abs(c.steps[0].loss - a.steps[0].loss), 1e-4);
}

TEST(TrainLoop, ResumeContinuesBitForBit) {
  const std::string kinds = "iItiIti";  // 4 batches per epoch: the run crosses epoch boundaries
  auto tweak = [](Options& o) {
    o.max_steps = 7;
    o.shuffle = true;
    o.lr_scheduler_type = "cosine";
    o.warmup_ratio = 0.2;
    o.weight_decay = 0.1;
  };
  const std::string out_u = train_tmp("resume_uninterrupted");
  TrainResult u = tiny_run(kinds, out_u, tweak);
  ASSERT_EQ(u.exit_code, 0);

  const std::string out_i = train_tmp("resume_interrupted");
  TrainHooks stop_at_3;
  stop_at_3.on_step = [](const StepRecord& s) {
    if (s.step == 3) request_stop();  // what SIGINT does
  };
  TrainResult i = tiny_run(kinds, out_i, tweak, stop_at_3);
  EXPECT_EQ(i.exit_code, 2);
  EXPECT_NE(i.message.find("--resume_from_checkpoint"), std::string::npos) << i.message;
  ASSERT_EQ(i.global_step, 3);
  ASSERT_TRUE(fs::exists(out_i + "/checkpoint-3/trainer_state.json"));

  TrainResult r = tiny_run(kinds, out_i, [&](Options& o) {
    tweak(o);
    o.resume_from_checkpoint = "latest";
  });
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.steps.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    const StepRecord &a = u.steps[3 + k], &b = r.steps[k];
    std::printf("  step %lld: loss %.17g vs %.17g\n", static_cast<long long>(b.step), a.loss, b.loss);
    EXPECT_EQ(a.step, b.step);
    EXPECT_EQ(a.sample_indices, b.sample_indices);
    EXPECT_EQ(a.loss, b.loss);  // bit for bit
    EXPECT_EQ(a.grad_norm, b.grad_norm);
    EXPECT_EQ(a.learning_rate, b.learning_rate);
    EXPECT_EQ(a.epoch, b.epoch);
  }
  EXPECT_EQ(u.train_loss, r.train_loss);
  auto wu = final_weights(out_u), wr = final_weights(out_i);
  for (const auto& [name, t] : wu) EXPECT_TRUE(torch::equal(t, wr.at(name))) << name;
  // metrics.jsonl continues where the checkpoint was: steps 1..7 once each.
  auto lines = lines_of(read_file(out_i + "/metrics.jsonl"));
  ASSERT_EQ(lines.size(), 7u);
  for (size_t k = 0; k < 7; ++k) EXPECT_EQ(json::parse(lines[k])["step"].get<int64_t>(), static_cast<int64_t>(k + 1));
  // HF's log_history continues too (the final summary entry last).
  json state = json::parse(read_file(out_i + "/trainer_state.json"));
  EXPECT_EQ(state["log_history"].size(), 8u);
}

TEST(TrainLoop, SaveInterruptedByAnErrorLeavesTheLastGoodCheckpoint) {
  const std::string out = train_tmp("atomic_throw");
  int saves = 0;
  TrainHooks fail_second_save;
  fail_second_save.on_checkpoint_part = [&](const std::string& part) {
    if (part == "model") ++saves;
    if (saves == 2 && part == "optimizer") throw std::runtime_error("disk full (simulated)");
  };
  auto tweak = [](Options& o) {
    o.max_steps = 5;
    o.save_steps = 2;
  };
  EXPECT_THROW(tiny_run("iItiIti", out, tweak, fail_second_save), std::runtime_error);
  EXPECT_TRUE(fs::exists(out + "/checkpoint-2/trainer_state.json"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-4"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-4.tmp"));
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-2");
  EXPECT_NO_THROW(load_llava(out + "/checkpoint-2"));
  TrainResult r = tiny_run("iItiIti", out, [&](Options& o) {
    tweak(o);
    o.resume_from_checkpoint = "latest";
  });
  EXPECT_EQ(r.exit_code, 0);
  ASSERT_FALSE(r.steps.empty());
  EXPECT_EQ(r.steps.front().step, 3);
  EXPECT_EQ(r.global_step, 5);
}

// Run by KilledMidSaveLeavesNoCompleteLookingCheckpoint in a child process (skipped otherwise): dies by SIGKILL
// in the middle of the second checkpoint, after the model and optimizer files are written.
TEST(TrainChild, KilledMidSave) {
  const char* dir = std::getenv("LLAVA_TRAIN_CHILD_DIR");
  if (!dir) GTEST_SKIP() << "helper of TrainLoop.KilledMidSaveLeavesNoCompleteLookingCheckpoint";
  int saves = 0;
  TrainHooks hooks;
  hooks.on_checkpoint_part = [&](const std::string& part) {
    if (part == "model") ++saves;
    if (saves == 2 && part == "rng_state") std::raise(SIGKILL);
  };
  // the parent's model and images (a SIGKILLed process cannot clean up temporary directories of its own)
  Options o = tiny_options_for(write_tiny_data(dir, "iItiIti"), dir, std::getenv("LLAVA_TRAIN_CHILD_MODEL"),
                               std::getenv("LLAVA_TRAIN_CHILD_IMAGES"));
  o.max_steps = 5;
  o.save_steps = 2;
  train(o, hooks);
}

TEST(TrainLoop, KilledMidSaveLeavesNoCompleteLookingCheckpoint) {
  const std::string out = train_tmp("atomic_kill");
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const std::string cmd = "LLAVA_TRAIN_CHILD_DIR=" + out + " LLAVA_TRAIN_CHILD_MODEL=" + tiny_model_dir() +
                          " LLAVA_TRAIN_CHILD_IMAGES=" + tiny_data_dir().image_dir + " " + self +
                          " --gtest_filter=TrainChild.KilledMidSave >" + out + "/child.log 2>&1";
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 128 + SIGKILL) << read_file(out + "/child.log");
  // The half-written checkpoint is only a .tmp directory; the complete one before it is intact.
  EXPECT_TRUE(fs::exists(out + "/checkpoint-4.tmp/model.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-4.tmp/trainer_state.json"));
  EXPECT_FALSE(fs::exists(out + "/checkpoint-4"));
  EXPECT_EQ(find_latest_checkpoint(out), out + "/checkpoint-2");
  TrainResult r = tiny_run("iItiIti", out, [](Options& o) {
    o.max_steps = 5;
    o.save_steps = 2;
    o.resume_from_checkpoint = "latest";
  });
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.steps.front().step, 3);
  EXPECT_FALSE(fs::exists(out + "/checkpoint-4.tmp"));  // leftovers cleaned at start
  EXPECT_TRUE(fs::exists(out + "/checkpoint-4/trainer_state.json"));
}

TEST(TrainLoop, SaveTotalLimitKeepsTheNewest) {
  const std::string out = train_tmp("rotation");
  TrainResult r = tiny_run("iItiIti", out, [](Options& o) {
    o.max_steps = 7;
    o.save_steps = 2;
    o.save_total_limit = 2;
  });
  ASSERT_EQ(r.exit_code, 0);
  auto all = list_checkpoints(out);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 4);
  EXPECT_EQ(all[1].first, 6);
  // the checkpoint is an HF-loadable model directory
  LoadedLlava l = load_llava(all[1].second);
  EXPECT_EQ(l.format, "llava");
}

TEST(TrainLoop, GradientCheckpointingGivesTheSameGradients) {
  for (bool lora : {false, true}) {
    auto tweak = [&](bool gc) {
      return [=](Options& o) {
        o.max_steps = 3;
        o.gradient_checkpointing = gc;
        o.lora_enable = lora;
        o.lora_r = 4;
        o.lora_alpha = 8;
        o.lora_dropout = 0;
      };
    };
    auto off = tiny_run("iItiIt", train_tmp("gc_off"), tweak(false));
    auto on = tiny_run("iItiIt", train_tmp("gc_on"), tweak(true));
    for (size_t i = 0; i < 3; ++i) {
      std::printf("  %s step %zu: grad_norm %.9g (no checkpointing) vs %.9g (checkpointing)\n", lora ? "lora" : "full",
                  i + 1, off.steps[i].grad_norm, on.steps[i].grad_norm);
      EXPECT_NEAR(off.steps[i].loss, on.steps[i].loss, 1e-6 * off.steps[i].loss);
      EXPECT_NEAR(off.steps[i].grad_norm, on.steps[i].grad_norm, 1e-6 * off.steps[i].grad_norm);
    }
  }
}

TEST(TrainLoop, NanGuardSkipsBadStepsAndStopsAfterMaxBadSteps) {
  // A NaN projector bias poisons every batch with an image; text-only batches stay finite.
  TrainHooks poison;
  poison.on_model_ready = [](LlavaForCausalLMImpl& m) {
    torch::NoGradGuard no_grad;
    m.multi_modal_projector->linears[0]->bias.fill_(std::numeric_limits<float>::quiet_NaN());
  };
  const std::string out = train_tmp("nan_guard");
  TrainResult r = tiny_run("iittiitt", out, [](Options& o) {
    o.max_steps = 4;
    o.max_bad_steps = 2;
  }, poison);
  ASSERT_EQ(r.exit_code, 0) << r.message;  // never 2 bad steps in a row
  ASSERT_EQ(r.steps.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const bool bad = i % 2 == 0;
    EXPECT_EQ(r.steps[i].update_skipped, bad) << "step " << i + 1;
    EXPECT_EQ(std::isfinite(r.steps[i].loss), !bad) << "step " << i + 1;
  }
  auto w = final_weights(out);
  EXPECT_TRUE(torch::isfinite(w.at("language_model.model.layers.0.self_attn.q_proj.weight")).all().item<bool>());
  auto lines = lines_of(read_file(out + "/metrics.jsonl"));
  EXPECT_TRUE(json::parse(lines[0])["loss"].is_null());
  EXPECT_TRUE(json::parse(lines[0])["update_skipped"].get<bool>());

  TrainResult stop = tiny_run("iiiiiiii", train_tmp("nan_stop"), [](Options& o) {
    o.max_steps = 10;
    o.max_bad_steps = 3;
  }, poison);
  EXPECT_EQ(stop.exit_code, 1);
  EXPECT_EQ(stop.global_step, 3);
  EXPECT_NE(stop.message.find("--max_bad_steps 3"), std::string::npos) << stop.message;
  EXPECT_NE(stop.message.find("t4"), std::string::npos) << stop.message;  // the samples of the last bad step
}

TEST(TrainLoop, LoraTrainsAdaptersAndTheMergedModelGivesTheSameLoss) {
  const std::string out = train_tmp("lora");
  TrainResult r = tiny_run("iItiIt", out, [](Options& o) {
    o.max_steps = 3;
    o.save_steps = 2;
    o.lora_enable = true;
    o.lora_r = 4;
    o.lora_alpha = 8;
    o.lora_dropout = 0;
  });
  ASSERT_EQ(r.exit_code, 0);
  auto base = read_tensors(tiny_model_dir());
  auto merged = read_tensors(out);
  auto ckpt = read_tensors(out + "/checkpoint-2");
  for (const auto& [name, t] : base) {
    const bool lora_target = name.find("_proj.weight") != std::string::npos && name.find("language_model.") == 0;
    const bool projector = name.rfind("multi_modal_projector.", 0) == 0;
    if (lora_target || projector) {
      EXPECT_FALSE(torch::equal(t, merged.at(name))) << name << " did not train";
    } else {
      EXPECT_TRUE(torch::equal(t, merged.at(name))) << name << " is frozen";
    }
    if (!projector) {
      EXPECT_TRUE(torch::equal(t, ckpt.at(name))) << name << ": checkpoints hold the unmerged base";
    }
  }
  EXPECT_TRUE(fs::exists(out + "/checkpoint-2/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(out + "/lora_adapter/adapter_config.json"));

  // The same batch through (a) the merged final model and (b) base + the final adapters + the trained projector.
  Options o = tiny_options(out + "/data.json", out);
  auto data = make_data_pipeline(o, true);
  Batch batch = build_batch(*data->dataset, data->example, {0, 1, 2}, 0);
  auto loss_of = [&](LlavaForCausalLMImpl& m) {
    torch::NoGradGuard ng;
    return m.forward(batch.inputs).loss().item<double>();
  };
  LoadedLlava merged_model = load_llava(out);
  const double merged_loss = loss_of(*merged_model.model);
  LoadedLlava lora_model = load_llava(tiny_model_dir());
  {
    torch::NoGradGuard ng;
    for (auto& p : lora_model.model->multi_modal_projector->named_parameters())
      p.value().copy_(merged.at("multi_modal_projector." + p.key()));
  }
  const double base_loss = loss_of(*lora_model.model);
  install_lora(*lora_model.model, LoraOptions{4, 8, 0.0});
  load_lora_adapter(*lora_model.model, out + "/lora_adapter");
  const double lora_loss = loss_of(*lora_model.model);
  std::printf("  loss: base+projector %.7f, LoRA %.7f, merged %.7f\n", base_loss, lora_loss, merged_loss);
  EXPECT_NEAR(lora_loss, merged_loss, 1e-5);
  EXPECT_GT(std::abs(lora_loss - base_loss), 1e-4);  // the adapters do something

  // Resuming a LoRA run from its checkpoint loads the adapters and finishes.
  TrainResult again = tiny_run("iItiIt", out, [](Options& o2) {
    o2.max_steps = 3;
    o2.save_steps = 2;
    o2.lora_enable = true;
    o2.lora_r = 4;
    o2.lora_alpha = 8;
    o2.lora_dropout = 0;
    o2.resume_from_checkpoint = "latest";
  });
  ASSERT_EQ(again.exit_code, 0);
  ASSERT_EQ(again.steps.size(), 1u);
  EXPECT_EQ(again.steps[0].loss, r.steps[2].loss);
}

TEST(TrainLoop, LoraDropoutChangesTheTrajectoryAndResumesBitForBit) {
  auto tweak = [](double dropout) {
    return [=](Options& o) {
      o.max_steps = 3;
      o.save_steps = 2;
      o.lora_enable = true;
      o.lora_r = 4;
      o.lora_alpha = 8;
      o.lora_dropout = dropout;
    };
  };
  auto no_dropout = tiny_run("iItiIt", train_tmp("lora_p0"), tweak(0.0));
  const std::string out = train_tmp("lora_dropout");
  auto dropout = tiny_run("iItiIt", out, tweak(0.3));
  ASSERT_EQ(no_dropout.exit_code, 0);
  ASSERT_EQ(dropout.exit_code, 0);
  ASSERT_EQ(dropout.steps.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    std::printf("  step %zu: loss %.9f (dropout 0.3) vs %.9f (no dropout)\n", i + 1, dropout.steps[i].loss,
                no_dropout.steps[i].loss);
    EXPECT_TRUE(std::isfinite(dropout.steps[i].loss));
  }
  // B = 0 at step 1, so the adapters (dropped out or not) add nothing to the loss yet; the update differs.
  EXPECT_NE(dropout.steps[0].grad_norm, no_dropout.steps[0].grad_norm);
  EXPECT_NE(dropout.steps[2].loss, no_dropout.steps[2].loss);
  json config = json::parse(read_file(out + "/lora_adapter/adapter_config.json"));
  EXPECT_EQ(config["lora_dropout"].get<double>(), 0.3);

  // The dropout masks come from torch's generator, saved in the checkpoint: resuming replays step 3 exactly.
  TrainResult again = tiny_run("iItiIt", out, [&](Options& o) {
    tweak(0.3)(o);
    o.resume_from_checkpoint = "latest";
  });
  ASSERT_EQ(again.exit_code, 0);
  ASSERT_EQ(again.steps.size(), 1u);
  EXPECT_EQ(again.steps[0].loss, dropout.steps[2].loss);
  EXPECT_EQ(again.steps[0].grad_norm, dropout.steps[2].grad_norm);
}

TEST(TrainLoop, Bf16KeepsFp32MasterWeightsAndFollowsFp32) {
  auto fp32 = tiny_run("iItiIt", train_tmp("fp32"), [](Options& o) { o.max_steps = 3; });
  const std::string out = train_tmp("bf16");
  auto bf16 = tiny_run("iItiIt", out, [](Options& o) {
    o.max_steps = 3;
    o.save_steps = 2;
    o.bf16 = true;
  });
  ASSERT_EQ(bf16.exit_code, 0);
  for (size_t i = 0; i < 3; ++i) {
    std::printf("  step %zu: loss fp32 %.5f bf16 %.5f\n", i + 1, fp32.steps[i].loss, bf16.steps[i].loss);
    EXPECT_NEAR(bf16.steps[i].loss, fp32.steps[i].loss, 0.03 * fp32.steps[i].loss);
  }
  ASSERT_TRUE(fs::exists(out + "/checkpoint-2/optimizer.rank0.safetensors"));  // fp32 masters are saved
  auto f = SafetensorsFile::open(out + "/model.safetensors");
  EXPECT_EQ(f->at("language_model.lm_head.weight").dtype, DType::BF16);
  auto masters = SafetensorsFile::open(out + "/checkpoint-2/optimizer.rank0.safetensors");
  EXPECT_EQ(masters->at("language_model.lm_head.weight.master").dtype, DType::F32);
}

TEST(TrainLoop, BadSamplesAreSkippedAndCounted) {
  const std::string out = train_tmp("bad_samples");
  TrainResult r = tiny_run("ixtIxi", out, [](Options& o) { o.max_steps = 3; });
  ASSERT_EQ(r.exit_code, 0);
  int64_t skipped = 0;
  for (const auto& s : r.steps) skipped += s.skipped_samples;
  EXPECT_EQ(skipped, 2);
  EXPECT_EQ(r.steps[0].num_samples, 1);
  auto lines = lines_of(read_file(out + "/metrics.jsonl"));
  EXPECT_EQ(json::parse(lines[0])["skipped_samples"].get<int64_t>(), 1);
}

// ------------------------------------------------------------------------------------------ command lines

TEST(TrainCli, TrainPrintsHfLogsAndWritesMetricsAndModel) {
  const std::string out = train_tmp("cli_train");
  const std::string data = write_tiny_data(out, "iItiIt");
  RunResult r = run_binary("train --model_name_or_path " + tiny_model_dir() + " --data_path " + data +
                           " --image_folder " + tiny_data_dir().image_dir + " --output_dir " + out +
                           " --per_device_train_batch_size 2 --max_steps 4 --logging_steps 2 --learning_rate 1e-3"
                           " --lr_scheduler_type linear --warmup_ratio 0.25 --save_steps 2 --shuffle false");
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;
  // {'loss': 5.6721, 'grad_norm': 1.234..., 'learning_rate': 0.0006666666666666666, 'epoch': 0.67}
  EXPECT_EQ(lines[0].rfind("{'loss': ", 0), 0u) << lines[0];
  EXPECT_NE(lines[0].find(", 'grad_norm': "), std::string::npos);
  EXPECT_NE(lines[0].find(", 'learning_rate': 0.0006666666666666666, 'epoch': 0.67}"), std::string::npos) << lines[0];
  EXPECT_NE(lines[1].find("'learning_rate': 0.0, 'epoch': 1.33}"), std::string::npos) << lines[1];
  EXPECT_EQ(lines[2].rfind("{'train_runtime': ", 0), 0u) << lines[2];
  EXPECT_NE(lines[2].find("'train_samples_per_second': "), std::string::npos);
  EXPECT_NE(lines[2].find("'train_loss': "), std::string::npos);
  EXPECT_NE(lines[2].find("'epoch': 1.33}"), std::string::npos) << lines[2];
  EXPECT_NE(r.err.find("4/4 ["), std::string::npos) << r.err;  // plain progress lines (not a terminal)

  auto metrics = lines_of(read_file(out + "/metrics.jsonl"));
  ASSERT_EQ(metrics.size(), 4u);
  json m = json::parse(metrics[1]);
  for (const char* key : {"step", "epoch", "loss", "grad_norm", "learning_rate", "num_tokens", "num_samples",
                          "step_time_s", "data_wait_s", "tokens_per_s", "samples_per_s", "skipped_samples"})
    EXPECT_TRUE(m.contains(key)) << key;
  EXPECT_EQ(m["step"].get<int64_t>(), 2);
  EXPECT_EQ(m["num_samples"].get<int64_t>(), 2);
  EXPECT_TRUE(fs::exists(out + "/checkpoint-2/trainer_state.json"));
  json state = json::parse(read_file(out + "/trainer_state.json"));
  EXPECT_EQ(state["global_step"].get<int64_t>(), 4);
  EXPECT_EQ(state["log_history"].size(), 3u);
  EXPECT_NO_THROW(load_llava(out));
}

TEST(TrainCli, LoraDropoutTrainsWithoutWarnings) {
  const std::string out = train_tmp("cli_lora_dropout");
  const std::string data = write_tiny_data(out, "iItiIt");
  RunResult r = run_binary("train --model_name_or_path " + tiny_model_dir() + " --data_path " + data +
                           " --image_folder " + tiny_data_dir().image_dir + " --output_dir " + out +
                           " --per_device_train_batch_size 2 --max_steps 3 --learning_rate 1e-3 --shuffle false"
                           " --lora_enable True --lora_r 4 --lora_alpha 8 --lora_dropout 0.05 --gradient_checkpointing True");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Stage = finetune with LoRA"), std::string::npos) << r.err;
  auto metrics = lines_of(read_file(out + "/metrics.jsonl"));
  ASSERT_EQ(metrics.size(), 3u);
  for (const auto& line : metrics) {
    json m = json::parse(line);
    ASSERT_TRUE(m["loss"].is_number()) << line;  // NaN is written as null
    EXPECT_TRUE(std::isfinite(m["loss"].get<double>())) << line;
    EXPECT_FALSE(m["update_skipped"].get<bool>()) << line;
  }
  EXPECT_EQ(json::parse(read_file(out + "/lora_adapter/adapter_config.json"))["lora_dropout"].get<double>(), 0.05);
  EXPECT_NO_THROW(load_llava(out));  // the merged model
}

TEST(TrainCli, SigintFinishesTheStepSavesAndExits2) {
  const std::string out = train_tmp("cli_sigint");
  const std::string data = write_tiny_data(out, "iItiIt");
  std::vector<std::string> args = {LLAVA_BINARY, "train", "--model_name_or_path", tiny_model_dir(), "--data_path", data,
                                   "--image_folder", tiny_data_dir().image_dir, "--output_dir", out,
                                   "--per_device_train_batch_size", "2", "--max_steps", "100000", "--save_steps", "0",
                                   "--logging_steps", "1000"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, (out + "/stdout.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, (out + "/stderr.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  ASSERT_EQ(posix_spawn(&pid, LLAVA_BINARY, &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  // wait until it is training (two steps in metrics.jsonl), then interrupt it as Ctrl-C would
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (lines_of(read_file(out + "/metrics.jsonl")).size() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  kill(pid, SIGINT);
  int status = 0;
  waitpid(pid, &status, 0);
  const std::string err = read_file(out + "/stderr.txt");
  ASSERT_TRUE(WIFEXITED(status)) << err;
  EXPECT_EQ(WEXITSTATUS(status), 2) << err;
  EXPECT_NE(err.find("--resume_from_checkpoint"), std::string::npos) << err;
  const std::string latest = find_latest_checkpoint(out);
  ASSERT_FALSE(latest.empty());
  TrainerState s = TrainerState::read(latest + "/trainer_state.json");
  EXPECT_GE(s.global_step, 2);
  EXPECT_EQ(lines_of(read_file(out + "/metrics.jsonl")).size(), static_cast<size_t>(s.global_step));
}

TEST(TrainCli, InitModelWritesALoadableRandomModel) {
  const std::string out = train_tmp("cli_init");
  std::ofstream(out + "/spec.yaml") << "text_config:\n  hidden_size: 48\n  num_hidden_layers: 1\n"
                                       "  num_attention_heads: 4\n  num_key_value_heads: 4\n  intermediate_size: 96\n"
                                       "  max_position_embeddings: 128\nvision_config:\n  hidden_size: 16\n"
                                       "  num_hidden_layers: 2\n  num_attention_heads: 2\n  intermediate_size: 32\n"
                                       "  image_size: 28\n  patch_size: 14\nmm_projector_type: linear\n";
  RunResult r = run_binary("init-model --model_config " + out + "/spec.yaml --tokenizer_dir " +
                           tiny_data_dir().model_dir + " --output_dir " + out + "/model --seed 5");
  ASSERT_EQ(r.code, 0) << r.err;
  LoadedLlava l = load_llava(out + "/model");
  EXPECT_EQ(l.config.text.hidden_size, 48);
  EXPECT_EQ(l.config.text.vocab_size, 300);  // from the tokenizer
  EXPECT_EQ(l.config.vision.image_size, 28);
  EXPECT_EQ(l.config.projector_type, "linear");
  EXPECT_TRUE(fs::exists(out + "/model/tokenizer.model"));
  // the same seed gives the same weights; the model trains from the command line
  RunResult again = run_binary("init-model --model_config " + out + "/spec.yaml --tokenizer_dir " +
                               tiny_data_dir().model_dir + " --output_dir " + out + "/model2 --seed 5");
  ASSERT_EQ(again.code, 0) << again.err;
  auto a = read_tensors(out + "/model"), b = read_tensors(out + "/model2");
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  RunResult bad = run_binary("init-model --output_dir " + out + "/model3");
  EXPECT_EQ(bad.code, 1);
  EXPECT_NE(bad.err.find("--model_config"), std::string::npos) << bad.err;
}
