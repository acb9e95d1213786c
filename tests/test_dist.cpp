// Distributed pieces: DistEnv parsing, Gloo collectives, GradReducer (all-reduce and reduce-to-owner buckets)
// against single-process gradients, dead/hung peers, `plan`. (The Optimizer on several ranks and every ZeRO
// stage: test_optimizer.cpp.) Ranks are forked processes: test_dist_support.h.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <thread>

#include "llava/dist/ddp.h"
#include "llava/dist/grad_reducer.h"
#include "llava/dist/plan.h"
#include "llava/dist/process_group.h"
#include "llava/fs_util.h"
#include "test_dist_support.h"

using namespace llava;
using namespace llava::dist;
using namespace llava::testing;
namespace fs = std::filesystem;

namespace {

DistEnv env_from(const std::map<std::string, std::string>& vars) {
  return DistEnv::from_lookup([&](const std::string& k) -> std::optional<std::string> {
    auto it = vars.find(k);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

}  // namespace

// ------------------------------------------------------------------ DistEnv

TEST(DistEnv, SingleProcessWithoutVariables) {
  DistEnv e = env_from({});
  EXPECT_FALSE(e.distributed());
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.launcher, "none");
  EXPECT_EQ(e.describe(), "single process");
}

TEST(DistEnv, Torchrun) {
  DistEnv e = env_from({{"RANK", "5"}, {"WORLD_SIZE", "16"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"},
                        {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "29500"},
                        {"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "2"}});  // torchrun's win over SLURM's
  EXPECT_TRUE(e.distributed());
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.master_addr, "10.0.0.1");
  EXPECT_EQ(e.master_port, 29500);
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.describe(), "rank 5/16 (local 1/4, torchrun), master 10.0.0.1:29500");
  // torchrun with one process: no group, no master needed
  DistEnv one = env_from({{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"LOCAL_RANK", "0"}});
  EXPECT_FALSE(one.distributed());
  // LOCAL_RANK defaults to RANK modulo LOCAL_WORLD_SIZE
  DistEnv d = env_from({{"RANK", "6"}, {"WORLD_SIZE", "8"}, {"LOCAL_WORLD_SIZE", "4"}, {"MASTER_ADDR", "h"},
                        {"MASTER_PORT", "1234"}});
  EXPECT_EQ(d.local_rank, 2);
}

TEST(DistEnv, Slurm) {
  DistEnv e = env_from({{"SLURM_PROCID", "11"}, {"SLURM_NTASKS", "16"}, {"SLURM_LOCALID", "3"},
                        {"SLURM_TASKS_PER_NODE", "8(x2)"}, {"SLURM_NODEID", "1"}, {"MASTER_ADDR", "node001"},
                        {"MASTER_PORT", "29400"}});
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.rank, 11);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 3);
  EXPECT_EQ(e.local_world_size, 8);
  EXPECT_EQ(e.master_addr, "node001");
  EXPECT_EQ(e.master_port, 29400);
  DistEnv uneven = env_from({{"SLURM_PROCID", "9"}, {"SLURM_NTASKS", "10"}, {"SLURM_LOCALID", "1"},
                             {"SLURM_TASKS_PER_NODE", "4(x2),2"}, {"SLURM_NODEID", "2"}, {"MASTER_ADDR", "n0"},
                             {"MASTER_PORT", "1"}});
  EXPECT_EQ(uneven.local_world_size, 2);
  DistEnv per_node = env_from({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_NTASKS_PER_NODE", "4"},
                               {"MASTER_ADDR", "n0"}, {"MASTER_PORT", "2"}});
  EXPECT_EQ(per_node.local_world_size, 4);
  EXPECT_EQ(per_node.local_rank, 0);
  // one SLURM task: a single process even without MASTER_ADDR
  EXPECT_FALSE(env_from({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}).distributed());
}

TEST(DistEnv, ClearErrors) {
  auto message = [](const std::map<std::string, std::string>& vars) {
    try {
      env_from(vars);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "1"}}).find("MASTER_ADDR is not set"),
            std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}}).find("MASTER_PORT is not set"),
            std::string::npos);
  EXPECT_NE(message({{"RANK", "x"}, {"WORLD_SIZE", "2"}}).find("RANK='x' is not an integer"), std::string::npos);
  EXPECT_NE(message({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "1"}}).find("outside"),
            std::string::npos);
  EXPECT_NE(message({{"WORLD_SIZE", "2"}}).find("RANK is not set"), std::string::npos);
  EXPECT_NE(message({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "a"}, {"MASTER_PORT", "70000"}}).find("port"),
            std::string::npos);
  std::string slurm = message({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "4"}});
  EXPECT_NE(slurm.find("MASTER_ADDR is not set"), std::string::npos) << slurm;
  EXPECT_NE(slurm.find("scontrol"), std::string::npos) << slurm;
}

TEST(DistBackend, Resolution) {
  EXPECT_EQ(resolve_backend("", "cpu"), "gloo");
  EXPECT_EQ(resolve_backend("gloo", "cuda"), "gloo");
  EXPECT_THROW(resolve_backend("mpi", "cpu"), Error);
  if (nccl_available()) {
    EXPECT_EQ(resolve_backend("", "cuda:0"), "nccl");
  } else {
    try {
      resolve_backend("", "cuda");
      ADD_FAILURE() << "nccl without NCCL accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no NCCL"), std::string::npos) << e.what();
    }
  }
  DistEnv bad = loopback_env(2, 2, free_port());  // rank 2 of 2
  EXPECT_THROW(ProcessGroup::create(bad, "gloo", std::chrono::seconds(5)), Error);
}

// ------------------------------------------------------------------ collectives

TEST(DistCollectives, OneRankGroupWorks) {
  auto g = ProcessGroup::create(loopback_env(0, 1, free_port()), "gloo", std::chrono::seconds(20));
  torch::Tensor t = torch::arange(6, torch::kFloat);
  g->allreduce_sum(t);
  EXPECT_TRUE(torch::equal(t, torch::arange(6, torch::kFloat)));
  EXPECT_DOUBLE_EQ(g->allreduce_scalar(1.5), 1.5);
}

TEST(DistCollectives, AllreduceBroadcastReduceBarrier) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    auto pg = connect(rank, world, port);
    if (pg->rank() != rank || pg->world_size() != world || pg->backend() != "gloo") fail("group identity");
    const double r = rank;
    // allreduce, one tensor and several (different shapes, one flattened collective)
    at::Tensor a = torch::arange(5, torch::kFloat) + r;  // rank0 0..4, rank1 1..5
    pg->allreduce_sum(a);
    expect_close(a, torch::arange(5, torch::kFloat) * 2 + 1, 0, "allreduce");
    std::vector<at::Tensor> many{torch::full({2, 3}, r + 1), torch::full({4}, 10 * (r + 1))};
    pg->allreduce_sum(many);
    expect_close(many[0], torch::full({2, 3}, 3.0), 0, "allreduce list [0]");
    expect_close(many[1], torch::full({4}, 30.0), 0, "allreduce list [1]");
    at::Tensor d = torch::full({3}, r + 0.5, torch::kDouble);
    pg->allreduce_sum_async(d).wait();
    expect_close(d, torch::full({3}, 2.0, torch::kDouble), 0, "allreduce double async");
    if (pg->allreduce_scalar(r + 1.25) != 3.5) fail("allreduce_scalar");
    // broadcast from rank 1
    at::Tensor b = torch::full({4}, r * 7.0);
    pg->broadcast(b, 1);
    expect_close(b, torch::full({4}, 7.0), 0, "broadcast");
    // reduce to rank 1: input of rank k = arange(6) * (k + 1); rank 1 ends with 3 * arange(6)
    at::Tensor red = torch::arange(6, torch::kFloat) * (r + 1);
    pg->reduce_sum_async(red, 1).wait();
    if (rank == 1) expect_close(red, torch::arange(6, torch::kFloat) * 3, 0, "reduce");
    at::Tensor red16 = torch::full({3}, r + 1.0, torch::kBFloat16);  // bf16 travels as fp32 on Gloo
    pg->reduce_sum_async(red16, 0).wait();
    if (rank == 0) expect_close(red16, torch::full({3}, 3.0), 0, "reduce bf16");
    // bf16 (what bf16 training reduces)
    at::Tensor h = torch::full({4}, r + 1.0, torch::kBFloat16);
    pg->allreduce_sum(h);
    expect_close(h, torch::full({4}, 3.0), 0, "allreduce bf16");
    pg->barrier();
    // misuse is a configuration error, not a peer error
    try {
      at::Tensor nc = torch::zeros({4, 4}).t();
      pg->allreduce_sum(nc);
      fail("non-contiguous tensor accepted");
    } catch (const PeerError&) {
      fail("misuse reported as a peer error");
    } catch (const Error&) {
    }
    pg->barrier();
    if (rank == 0) std::printf("collectives: allreduce, broadcast, reduce, bf16, barrier OK\n");
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

// ------------------------------------------------------------------ gradient reduction

// GradReducer (all-reduce buckets) on 2 ranks, each half the batch, optionally in 2 micro-steps: every rank
// ends with the gradient of the whole batch on one process; parameters start equal through broadcast_parameters.
TEST(DistGradReducer, TwoRanksEqualTheDoubledBatch) {
  struct Case {
    size_t cap;
    int accum;
    const char* name;
  };
  for (Case c : {Case{25u << 20, 1, "one bucket"}, Case{1, 1, "a bucket per parameter"},
                 Case{100, 2, "small buckets, 2 micro-steps"}}) {
    const int world = 2, port = free_port();
    auto codes = spawn(world, [&](int rank) {
      // reference: gradients of the global batch on one process
      Tiny ref = Tiny::make();
      TinyBatch b = batch_for_step(0);
      reference_backward(ref, b, 4);

      auto pg = connect(rank, world, port);
      Tiny m = Tiny::make();
      if (rank == 1) {
        torch::NoGradGuard ng;
        for (auto& p : m.params) p.add_(1.0);  // broadcast_parameters must undo this
      }
      broadcast_parameters(*pg, m.params);
      for (size_t i = 0; i < m.params.size(); ++i) expect_close(m.params[i], ref.params[i], 0, "broadcast parameter");
      GradReducer reducer(pg, m.params, {}, {}, c.cap, GradReducer::Mode::AllReduce);
      double worst = 0;
      for (int step = 0; step < 2; ++step) {  // twice: zero_grad must reset everything
        rank_backward(m, b, rank, world, c.accum, [&](bool s) { reducer.set_sync(s); });
        reducer.finish();
        for (size_t i = 0; i < m.params.size(); ++i)
          worst = std::max(worst, expect_close(m.params[i].grad(), ref.params[i].grad(), 1e-6,
                                               std::string(c.name) + ": grad of parameter " + std::to_string(i)));
        reducer.zero_grad();
        for (auto& p : m.params)
          if (p.grad().abs().max().item<double>() != 0) fail("zero_grad left a gradient");
      }
      if (rank == 0)
        std::printf("GradReducer all-reduce (%s, %zu buckets): max |grad - reference| = %.3g\n", c.name,
                    reducer.buckets().size(), worst);
      return 0;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0})) << c.name;
  }
}

// DDP + torch's own AdamW on every rank, with the average convention (each rank's loss is its own mean, the
// reduced gradient scaled by 1 / world_size), over 3 steps, equals the single-process run.
TEST(DistGradReducer, AverageScaleWithTorchAdamW) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    Reference ref = run_reference(3);
    auto pg = connect(rank, world, port);
    Tiny m = Tiny::make();
    auto opt = reference_adamw(m);
    GradReducer reducer(pg, m.params, {}, {}, 64, GradReducer::Mode::AllReduce);
    for (int s = 0; s < 3; ++s) {
      TinyBatch b = batch_for_step(s);
      reducer.set_sync(true);
      const int64_t half = kGlobalBatch / world;
      at::Tensor l;
      for (int k = 0; k < 2; ++k) {
        at::Tensor part = chunk_loss(m, b, rank * half + k * half / 2, rank * half + (k + 1) * half / 2);
        l = l.defined() ? l + part : part;
      }
      (l * world).backward();
      reducer.finish();
      {
        torch::NoGradGuard ng;
        for (auto& p : m.params) p.mutable_grad().mul_(1.0 / world);
      }
      double norm = torch::nn::utils::clip_grad_norm_(m.params, kMaxNorm);
      if (std::abs(norm - ref.norms[s]) > 1e-5 * ref.norms[s]) fail("grad norm differs");
      opt->step();
      reducer.zero_grad();
      for (size_t i = 0; i < m.params.size(); ++i)
        expect_close(m.params[i], ref.params_after[s][i], 1e-5, "DDP+AdamW step " + std::to_string(s));
    }
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

// Reduce-to-owner buckets (ZeRO-2) on 2 ranks, 2 micro-steps: each rank's fp32 accumulators of the parameters
// it owns hold the whole batch's gradient; no rank keeps a .grad; buckets never mix owners.
TEST(DistGradReducer, ReduceToOwnersKeepsOnlyOwnedGradients) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    Tiny ref = Tiny::make();
    reference_backward(ref, batch_for_step(0), 4);
    auto pg = connect(rank, world, port);
    Tiny m = Tiny::make();
    const std::vector<int> owner = {0, 1, 1, 0, 1};
    std::vector<at::Tensor> acc(m.params.size());
    for (size_t i = 0; i < m.params.size(); ++i)
      if (owner[i] == rank) acc[i] = torch::zeros(m.params[i].sizes());
    GradReducer reducer(pg, m.params, owner, acc, 40, GradReducer::Mode::ReduceToOwner);
    for (const Bucket& b : reducer.buckets())
      for (const BucketSlot& s : b.slots)
        if (owner[s.param] != b.owner) fail("a bucket mixes owners");
    for (int step = 0; step < 2; ++step) {
      rank_backward(m, batch_for_step(0), rank, world, 2, [&](bool s) { reducer.set_sync(s); });
      reducer.finish();
      for (size_t i = 0; i < m.params.size(); ++i) {
        if (m.params[i].grad().defined()) fail("a full .grad was kept");
        if (owner[i] == rank) expect_close(acc[i], ref.params[i].grad(), 1e-6, "owned gradient " + std::to_string(i));
      }
      reducer.zero_grad();
      for (const auto& a : acc)
        if (a.defined() && a.abs().max().item<double>() != 0) fail("zero_grad left an accumulated gradient");
    }
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

// ------------------------------------------------------------------ dead and hung peers

// Rank 1 dies before the backward; rank 0's GradReducer::finish reports it (not a hang).
TEST(DistPeerFailure, DeadPeerIsAnErrorOnTheOtherRank) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    auto pg = connect(rank, world, port, 4);
    Tiny m = Tiny::make();
    GradReducer sync(pg, m.params, {}, {}, 1 << 20, GradReducer::Mode::AllReduce);
    pg->barrier();
    if (rank == 1) ::_exit(0);  // dies without a word
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto t0 = std::chrono::steady_clock::now();
    try {
      sync.set_sync(true);
      chunk_loss(m, batch_for_step(0), 0, 4).backward();
      sync.finish();
    } catch (const PeerError& e) {
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::string w = e.what();
      std::printf("dead peer after %.2f s: %s\n", s, w.c_str());
      if (w.rfind("rank 0: ", 0) != 0 || w.find("allreduce") == std::string::npos ||
          w.find("(exit code 3)") == std::string::npos)
        fail("unclear message: " + w);
      if (s > 4 + 6) fail("took too long");
      // the group is unusable afterwards, at once
      try {
        pg->barrier();
      } catch (const PeerError&) {
        return 0;
      }
      fail("group still usable");
    }
    fail("no error");
  });
  EXPECT_EQ(codes[0], 0);
}

// Rank 1 hangs (sleeps) instead of joining the allreduce: rank 0 gets "peer timed out after 3 s".
TEST(DistPeerFailure, HungPeerTimesOut) {
  const int world = 2, port = free_port();
  auto codes = spawn(
      world,
      [&](int rank) {
        auto pg = connect(rank, world, port, 3);
        pg->barrier();
        if (rank == 1) std::this_thread::sleep_for(std::chrono::seconds(60));
        auto t0 = std::chrono::steady_clock::now();
        try {
          at::Tensor t = torch::ones({16});
          pg->allreduce_sum(t);
        } catch (const PeerError& e) {
          double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          std::string w = e.what();
          std::printf("hung peer after %.2f s: %s\n", s, w.c_str());
          if (w.find("rank 0: peer timed out after 3 s in allreduce") == std::string::npos ||
              w.find("(exit code 3)") == std::string::npos)
            fail("unclear message: " + w);
          if (s < 2.5 || s > 3 + 6) fail("timed out after " + std::to_string(s) + " s, expected ~3 s");
          return 0;
        }
        fail("no error");
      },
      40, /*stop_when_rank0_done=*/true);
  EXPECT_EQ(codes[0], 0);
}

// Only rank 0 of 2 starts: the rendezvous fails after the timeout with a message naming the address.
TEST(DistPeerFailure, MissingPeerAtRendezvous) {
  const int port = free_port();
  auto codes = spawn(1, [&](int) {
    auto t0 = std::chrono::steady_clock::now();
    try {
      connect(0, 2, port, 3);
    } catch (const PeerError& e) {
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::string w = e.what();
      std::printf("missing peer after %.2f s: %s\n", s, w.c_str());
      if (w.find("rendezvous at 127.0.0.1:" + std::to_string(port)) == std::string::npos ||
          w.find("(exit code 3)") == std::string::npos)
        fail("unclear message: " + w);
      if (s > 3 + 6) fail("took too long");
      return 0;
    }
    fail("no error");
  });
  EXPECT_EQ(codes, (std::vector<int>{0}));
}

// ------------------------------------------------------------------ plan

TEST(DistPlan, ParameterCountsOfLlava15) {
  PlanModel m;
  ASSERT_TRUE(plan_preset("liuhaotian/llava-v1.5-7b", m));
  PlanSettings s;
  ParamCounts c = count_params(m, s);
  EXPECT_EQ(c.llm, 6738415616);        // Llama-2-7b / vicuna-7b-v1.5
  EXPECT_EQ(c.vision, 303507456);      // CLIP ViT-L/14-336 vision model
  EXPECT_EQ(c.projector, 20979712);    // mlp2x_gelu 1024 -> 4096 -> 4096
  EXPECT_EQ(c.trainable, c.llm + c.projector);
  EXPECT_EQ(c.trainable_what, "LLM + projector");
  s.tune_mm_mlp_adapter = true;
  EXPECT_EQ(count_params(m, s).trainable, c.projector);
  s.tune_mm_mlp_adapter = false;
  s.lora_enable = true;
  s.lora_r = 128;
  ParamCounts lora = count_params(m, s);
  EXPECT_EQ(lora.trainable, lora.lora + c.projector);
  EXPECT_NEAR(lora.lora / 1e6, 319.8, 0.1);  // LLaVA-1.5-7b LoRA r=128 on all linear layers
  PlanModel thirteen;
  ASSERT_TRUE(plan_preset("LLaVA-v1.5-13B", thirteen));
  EXPECT_NEAR(thirteen.llm_params() / 1e9, 13.016, 0.001);
  EXPECT_FALSE(plan_preset("gpt-5", m));
}

// LLaVA-1.5-7B full finetune, 8 x 80 GB, batch 16 x 2048, bf16: fits with ZeRO-1/2 + gradient checkpointing
// (fused attention), not with plain DDP.
TEST(DistPlan, Llava15FinetuneFitsEightGpusWithZeroAndCheckpointing) {
  PlanModel m;
  ASSERT_TRUE(plan_preset("llava-v1.5-7b", m));
  PlanSettings s;
  s.world_size = 8;
  s.batch = 16;
  s.seq = 2048;
  s.bf16 = true;
  s.fused_attention = true;
  const double GiB = 1024.0 * 1024 * 1024;
  auto total = [&](int stage, bool ckpt) { return estimate_memory(m, s, stage, ckpt).total() / GiB; };
  EXPECT_LT(total(2, true), 80.0);
  EXPECT_LT(total(1, true), 80.0);
  EXPECT_GT(total(0, true), 80.0);   // 16 bytes x 6.76 B trainable parameters alone
  EXPECT_GT(total(2, false), 80.0);  // 32 layers of activations at 32k tokens
  EXPECT_LT(total(2, true), total(1, true));
  MemoryEstimate z2 = estimate_memory(m, s, 2, true);
  EXPECT_NEAR(z2.weights / GiB, 7.06e9 * 2 / GiB, 0.05);
  EXPECT_NEAR(z2.adam / GiB, 6.76e9 * 8 / 8 / GiB, 0.05);
  std::string report = plan_report(m, s);
  std::printf("%s", report.c_str());
  EXPECT_NE(report.find("smallest: ZeRO-2 + gradient checkpointing"), std::string::npos);
}

// The command itself (skipped when llava-train is not built): a preset name, no model directory.
TEST(DistPlan, CommandWithPresetAndRecipe) {
  if (!fs::exists(LLAVA_BINARY)) GTEST_SKIP() << LLAVA_BINARY << " not built";
  const std::string cmd = std::string(LLAVA_BINARY) + " plan --config " + LLAVA_SOURCE_DIR +
                          "/configs/llava-v1.5-7b-finetune.yaml --model_name_or_path liuhaotian/llava-v1.5-7b"
                          " --world_size 8 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = ::pclose(p);
  std::printf("%s", out.c_str());
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_NE(out.find("trainable 6.76 B (LLM + projector)"), std::string::npos);
  EXPECT_NE(out.find("smallest: ZeRO-2 + gradient checkpointing"), std::string::npos);
  EXPECT_NE(out.find("this config: zero_stage 2, gradient_checkpointing true"), std::string::npos);
  FILE* bad = ::popen((std::string(LLAVA_BINARY) + " plan --model_name_or_path no-such-model 2>&1").c_str(), "r");
  std::string err;
  while (size_t n = std::fread(buf, 1, sizeof buf, bad)) err.append(buf, n);
  EXPECT_NE(WEXITSTATUS(::pclose(bad)), 0);
  EXPECT_NE(err.find("neither a directory nor a preset (llava-v1.5-7b"), std::string::npos) << err;
}
