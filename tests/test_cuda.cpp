// CUDA: training on one GPU reproduces the llava-tiny fixture trajectories (HF Trainer, CPU fp32) and the
// same run on CPU; bf16 on the GPU follows fp32; the NCCL process group's collectives work (one rank: NCCL
// refuses two ranks on one GPU, and the lent machines have one). Every test skips where no GPU is visible,
// so the suite builds and passes on CPU-only machines and LibTorch builds.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "llava/dist/process_group.h"
#include "llava/train/trainer.h"
#include "test_train_support.h"

using namespace llava;
using namespace llava::testing;
using nlohmann::json;

#define LLAVA_REQUIRE_CUDA()                                                                                        \
  do {                                                                                                              \
    if (!torch::cuda::is_available())                                                                               \
      GTEST_SKIP() << "no CUDA device visible (CPU-only LibTorch or no GPU): the CUDA tests run on a GPU machine"; \
  } while (0)

namespace {

// The fixture's 6-step trajectory on cuda:0 in fp32 (TF32 off: --tf32 defaults to false), with the CPU
// tests' tolerances: loss abs 2e-3, grad_norm rel 1e-3, lr abs 1e-9.
void check_fixture_trajectory_on_gpu(bool pretrain) {
  const std::string name = pretrain ? "pretrain" : "finetune";
  json expected = json::parse(read_file(fixture_dir() + "/expected/train_" + name + ".json"));
  Options o = fixture_options(train_tmp("cuda_fixture_" + name), pretrain);
  o.device = "cuda";
  TrainResult r = train(o);
  ASSERT_EQ(r.exit_code, 0) << r.message;
  ASSERT_EQ(r.steps.size(), 6u);
  for (size_t i = 0; i < 6; ++i) {
    const json& e = expected["steps"][i];
    const StepRecord& s = r.steps[i];
    const double dl = std::abs(s.loss - e["loss"].get<double>());
    const double dg = std::abs(s.grad_norm - e["grad_norm"].get<double>()) / e["grad_norm"].get<double>();
    std::printf("  gpu %s step %zu: loss %.6f (expected %.6f, diff %.1e)  grad_norm %.6f (rel diff %.1e)\n",
                name.c_str(), i + 1, s.loss, e["loss"].get<double>(), dl, s.grad_norm, dg);
    EXPECT_LE(dl, 2e-3) << "step " << i + 1;
    EXPECT_LE(dg, 1e-3) << "step " << i + 1;
    EXPECT_NEAR(s.learning_rate, e["learning_rate"].get<double>(), 1e-9) << "step " << i + 1;
  }
}

TrainResult tiny_gpu_run(const std::string& out, const std::string& device, bool bf16) {
  Options o = tiny_options(write_tiny_data(out, "iItiIt"), out);
  o.max_steps = 3;
  o.device = device;
  o.bf16 = bf16;
  return train(o);
}

}  // namespace

TEST(CudaTrain, FixtureFinetuneTrajectoryOnGpu) {
  LLAVA_REQUIRE_CUDA();
  LLAVA_REQUIRE_FIXTURES();
  check_fixture_trajectory_on_gpu(false);
}

TEST(CudaTrain, FixturePretrainTrajectoryOnGpu) {
  LLAVA_REQUIRE_CUDA();
  LLAVA_REQUIRE_FIXTURES();
  check_fixture_trajectory_on_gpu(true);
}

TEST(CudaTrain, GpuFp32FollowsCpuFp32) {
  LLAVA_REQUIRE_CUDA();
  const std::string cpu_out = train_tmp("cuda_vs_cpu_cpu"), gpu_out = train_tmp("cuda_vs_cpu_gpu");
  TrainResult cpu = tiny_gpu_run(cpu_out, "cpu", false);
  TrainResult gpu = tiny_gpu_run(gpu_out, "cuda", false);
  ASSERT_EQ(cpu.exit_code, 0) << cpu.message;
  ASSERT_EQ(gpu.exit_code, 0) << gpu.message;
  ASSERT_EQ(cpu.steps.size(), gpu.steps.size());
  for (size_t i = 0; i < cpu.steps.size(); ++i) {
    std::printf("  step %zu: loss cpu %.6f gpu %.6f  grad_norm cpu %.6f gpu %.6f\n", i + 1, cpu.steps[i].loss,
                gpu.steps[i].loss, cpu.steps[i].grad_norm, gpu.steps[i].grad_norm);
    EXPECT_NEAR(gpu.steps[i].loss, cpu.steps[i].loss, 1e-4 * std::abs(cpu.steps[i].loss));
    EXPECT_NEAR(gpu.steps[i].grad_norm, cpu.steps[i].grad_norm, 1e-3 * cpu.steps[i].grad_norm);
  }
  // The saved models (written from the GPU run's weights) agree too.
  auto a = read_tensors(cpu_out);
  auto b = read_tensors(gpu_out);
  for (const auto& [name, value] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_LE((b.at(name) - value).abs().max().item<double>(), 1e-4) << name;
  }
}

TEST(CudaTrain, Bf16OnGpuFollowsFp32) {
  LLAVA_REQUIRE_CUDA();
  TrainResult fp32 = tiny_gpu_run(train_tmp("cuda_fp32"), "cuda", false);
  TrainResult bf16 = tiny_gpu_run(train_tmp("cuda_bf16"), "cuda", true);
  ASSERT_EQ(bf16.exit_code, 0) << bf16.message;
  for (size_t i = 0; i < fp32.steps.size(); ++i) {
    std::printf("  step %zu: loss fp32 %.5f bf16 %.5f\n", i + 1, fp32.steps[i].loss, bf16.steps[i].loss);
    EXPECT_NEAR(bf16.steps[i].loss, fp32.steps[i].loss, 0.03 * fp32.steps[i].loss);
  }
}

TEST(CudaDist, NcclOneRankCollectives) {
  LLAVA_REQUIRE_CUDA();
  if (!dist::nccl_available()) GTEST_SKIP() << "this build has no NCCL process group (nccl.h not found at configure)";
  dist::DistEnv env;
  env.rank = 0;
  env.world_size = 1;
  env.local_rank = 0;
  env.local_world_size = 1;
  env.master_addr = "127.0.0.1";
  env.master_port = 29000 + static_cast<int>(::getpid() % 1000);
  env.launcher = "test";
  auto g = dist::ProcessGroup::create(env, "nccl", std::chrono::seconds(60));
  ASSERT_TRUE(g->device().is_cuda());
  for (auto dtype : {torch::kFloat, torch::kBFloat16}) {
    auto opts = torch::TensorOptions().dtype(dtype).device(g->device());
    torch::Tensor t = torch::arange(8, opts);
    torch::Tensor want = t.clone();
    g->allreduce_sum(t);
    EXPECT_TRUE(torch::equal(t, want));
    g->allreduce_sum_async(t).wait();
    EXPECT_TRUE(torch::equal(t, want));
    g->broadcast(t, 0);
    EXPECT_TRUE(torch::equal(t, want));
    torch::Tensor reduced = t.clone();
    g->reduce_sum_async(reduced, 0).wait();
    EXPECT_TRUE(torch::equal(reduced, want));
  }
  EXPECT_DOUBLE_EQ(g->allreduce_scalar(2.5), 2.5);
  g->barrier();
  // A tensor on the wrong device is a clear error, not a crash inside NCCL.
  torch::Tensor cpu = torch::ones({4});
  EXPECT_THROW(g->allreduce_sum(cpu), Error);
  // Destroying the group shuts NCCL down cleanly, and a new group can be made afterwards.
  g.reset();
  env.master_port += 1;
  auto again = dist::ProcessGroup::create(env, "nccl", std::chrono::seconds(60));
  EXPECT_DOUBLE_EQ(again->allreduce_scalar(1.0), 1.0);
}

TEST(CudaGenerate, FixtureGreedyIdsOnGpuFp32AndBf16Runs) {
  LLAVA_REQUIRE_CUDA();
  LLAVA_REQUIRE_FIXTURES();
  // fp32 on the GPU: transformers' greedy ids (CPU fp32), one by one and batched; bf16 runs to full length.
  json cases = json::parse(read_file(fixture_dir() + "/expected/generate.json"))["cases"];
  const std::string out = train_tmp("cuda_generate"), f = fixture_dir();
  for (const std::string extra : {"--per_device_eval_batch_size 1", "--per_device_eval_batch_size 6",
                                  "--per_device_eval_batch_size 6 --bf16 true"}) {
    RunResult r = run_binary("generate --device cuda --model_name_or_path " + f + " --data_path " + f +
                             "/data.json --image_folder " + f + "/images --max_new_tokens 24 " + extra +
                             " --output " + out + "/g.jsonl");
    ASSERT_EQ(r.code, 0) << r.err;
    auto lines = lines_of(read_file(out + "/g.jsonl"));
    ASSERT_EQ(lines.size(), 6u);
    int identical = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      json g = json::parse(lines[i]);
      ASSERT_EQ(g["generated_ids"].size(), 24u);
      identical += g["generated_ids"] == cases[i]["generated_ids"];
    }
    std::printf("  gpu generate %s: %d / 6 cases with the reference ids\n", extra.c_str(), identical);
    if (extra.find("bf16") == std::string::npos) {
      EXPECT_EQ(identical, 6);
    }
  }
}
