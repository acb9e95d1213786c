// The trainer's Optimizer on one process and on 2 ranks, for every ZeRO stage (owners, reduce-to-owner
// buckets, broadcast of updated parameters), against torch AdamW on the whole batch in one process; bf16;
// its checkpoint state resumed on other world sizes and stages. Ranks are forked: test_dist_support.h.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "llava/error.h"
#include "llava/train/optimizer.h"
#include "llava/train/state.h"
#include "test_dist_support.h"

using namespace llava;
using namespace llava::testing;

namespace {

// The tiny model's parameters under names whose rules give torch's reference groups: w1, w2 decay at kLr0;
// b1, b2, u no decay at kLr1 (the projector's lr and ".bias" names).
std::vector<NamedParameter> named(const Tiny& m) {
  const char* names[] = {"llm.w1", "multi_modal_projector.b1.bias", "llm.w2", "multi_modal_projector.b2.bias",
                         "multi_modal_projector.u.bias"};
  std::vector<NamedParameter> out;
  for (size_t i = 0; i < m.params.size(); ++i) out.push_back({names[i], m.params[i]});
  return out;
}

OptimizerConfig config(int stage, size_t cap) {
  OptimizerConfig c;
  c.learning_rate = kLr0;
  c.projector_lr = kLr1;
  c.weight_decay = kWd0;
  c.zero_stage = stage;
  c.bucket_cap_bytes = cap;
  return c;
}

// One optimizer step of the trainer's protocol over this rank's micro-batches; returns the pre-clip norm.
double train_step(Optimizer& opt, const Tiny& m, int step, int rank, int world, int accum) {
  const int64_t c = kGlobalBatch / (world * accum);
  const TinyBatch b = batch_for_step(step);
  for (int k = 0; k < accum; ++k) {
    opt.begin_backward(k == accum - 1);
    const int64_t lo = (rank * accum + k) * c;
    chunk_loss(m, b, lo, lo + c).backward();
    opt.end_backward();
  }
  opt.reduce_gradients(1.0);
  const double norm = opt.grad_norm();
  opt.step(1.0, clip_coefficient(norm, kMaxNorm));
  opt.zero_grad();
  return norm;
}

}  // namespace

// Stages 0, 1, 2 on 2 ranks (tiny and large buckets, with and without accumulation) over 3 steps equal torch
// AdamW on the whole batch in one process (grad norm, clipping, two lr/decay groups).
TEST(Optimizer, ZeroStagesOnTwoRanksEqualPlainAdamW) {
  struct Case {
    int stage;
    size_t cap;
    int accum;
  };
  std::vector<Case> cases = {{0, 25u << 20, 1}, {1, 25u << 20, 1}, {1, 40, 2}, {2, 25u << 20, 1}, {2, 40, 1},
                             {2, 1, 2}};
  for (Case c : cases) {
    const std::string name = "stage " + std::to_string(c.stage) + ", cap " + std::to_string(c.cap) + " B, accum " +
                             std::to_string(c.accum);
    const int world = 2, port = free_port();
    auto codes = spawn(world, [&](int rank) {
      Reference ref = run_reference(3);
      auto pg = connect(rank, world, port);
      Tiny m = Tiny::make();
      Optimizer opt(named(m), config(c.stage, c.cap), pg);
      double worst = 0, worst_norm = 0;
      for (int s = 0; s < 3; ++s) {
        const double norm = train_step(opt, m, s, rank, world, c.accum);
        worst_norm = std::max(worst_norm, std::abs(norm - ref.norms[s]) / ref.norms[s]);
        if (std::abs(norm - ref.norms[s]) > 1e-6 * ref.norms[s])
          fail(name + ": grad norm " + std::to_string(norm) + " vs " + std::to_string(ref.norms[s]));
        for (size_t i = 0; i < m.params.size(); ++i)
          worst = std::max(worst, expect_close(m.params[i], ref.params_after[s][i], 1e-5,
                                               name + ": step " + std::to_string(s) + " parameter " + std::to_string(i)));
        if (c.stage == 2)
          for (auto& p : m.params)
            if (p.grad().defined()) fail(name + ": stage 2 kept a full gradient");
      }
      size_t state = opt.state_tensors().size();
      if (rank == 0)
        std::printf("ZeRO %s: %zu state tensors on rank 0, max |param - reference| = %.3g, grad norm rel. diff %.3g\n",
                    name.c_str(), state, worst, worst_norm);
      return 0;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0})) << name;
  }
}

// bf16 parameters (bf16 gradients and buckets, fp32 master weights; Gloo reduces bf16 as fp32): ZeRO-1 and
// ZeRO-2 end where stage 0 ends.
TEST(Optimizer, Bf16ParametersAllStagesAgree) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    auto pg = connect(rank, world, port);
    std::vector<std::vector<at::Tensor>> finals;
    for (int stage = 0; stage <= 2; ++stage) {
      Tiny m = Tiny::make();
      for (auto& p : m.params) p = p.detach().to(torch::kBFloat16).requires_grad_(true);
      Optimizer opt(named(m), config(stage, 40), pg);
      for (int s = 0; s < 3; ++s) {
        const int64_t c = kGlobalBatch / world;
        TinyBatch b = batch_for_step(s);
        b.x = b.x.to(torch::kBFloat16);
        b.t = b.t.to(torch::kBFloat16);
        opt.begin_backward(true);
        chunk_loss(m, b, rank * c, rank * c + c).backward();
        opt.end_backward();
        opt.reduce_gradients(1.0);
        opt.step(1.0, clip_coefficient(opt.grad_norm(), kMaxNorm));
        opt.zero_grad();
      }
      for (auto& p : m.params)
        if (p.scalar_type() != torch::kBFloat16) fail("parameter dtype changed");
      finals.push_back(m.detached());
    }
    double worst = 0;
    for (int stage = 1; stage <= 2; ++stage)
      for (size_t i = 0; i < finals[0].size(); ++i)
        worst = std::max(worst, expect_close(finals[stage][i], finals[0][i], 8e-3,
                                             "bf16 stage " + std::to_string(stage) + " parameter " + std::to_string(i)));
    if (rank == 0) std::printf("bf16: ZeRO-1/2 vs ZeRO-0 after 3 steps: max |diff| = %.3g\n", worst);
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

// One process, no process group (--zero_stage 2 asked for): plain AdamW with the grad norm torch computes.
TEST(Optimizer, SingleProcessIsPlainAdamW) {
  auto codes = spawn(1, [&](int) {
    Reference ref = run_reference(3);
    Tiny m = Tiny::make();
    Optimizer opt(named(m), config(2, 1 << 20), nullptr);
    for (int s = 0; s < 3; ++s) {
      const double norm = train_step(opt, m, s, 0, 1, 2);
      if (std::abs(norm - ref.norms[s]) > 1e-6 * ref.norms[s]) fail("grad norm differs");
      for (size_t i = 0; i < m.params.size(); ++i) expect_close(m.params[i], ref.params_after[s][i], 1e-5, "1 process");
    }
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0}));
}

// Optimizer state written by 2 ranks (ZeRO-2) resumes on 1 process and on 2 ranks with another stage and
// bucket layout (ZeRO-1); the step after resuming equals the uninterrupted reference. A state file missing
// is an error naming the tensor, not a silent partial load.
TEST(Optimizer, StateResumesAcrossWorldSizesAndStages) {
  const std::string dir = temp_dir("optimizer_resume");
  auto save_params = [&](const Tiny& m) {
    for (size_t i = 0; i < m.params.size(); ++i) torch::save(m.params[i].detach(), dir + "/param" + std::to_string(i) + ".pt");
  };
  auto load_params = [dir](Tiny& m) {
    torch::NoGradGuard ng;
    for (size_t i = 0; i < m.params.size(); ++i) {
      at::Tensor x;
      torch::load(x, dir + "/param" + std::to_string(i) + ".pt");
      m.params[i].copy_(x);
    }
  };

  // phase A: 2 ranks, ZeRO-2, 40-byte buckets, 2 steps, save (each rank its part, rank 0 the metadata)
  int port = free_port();
  auto codes = spawn(2, [&](int rank) {
    auto pg = connect(rank, 2, port);
    Tiny m = Tiny::make();
    Optimizer opt(named(m), config(2, 40), pg);
    for (int s = 0; s < 2; ++s) train_step(opt, m, s, rank, 2, 1);
    save_optimizer_state(opt, dir, rank);
    if (rank == 0) save_params(m);
    return 0;
  });
  ASSERT_EQ(codes, (std::vector<int>{0, 0}));
  ASSERT_TRUE(std::filesystem::exists(dir + "/optimizer.rank0.safetensors"));
  ASSERT_TRUE(std::filesystem::exists(dir + "/optimizer.rank1.safetensors"));

  auto third_step_matches = [&](Tiny& m, Optimizer& opt, int rank, int world, const std::string& what) {
    if (opt.step_count() != 2) fail(what + ": step count " + std::to_string(opt.step_count()));
    Reference ref = run_reference(3);
    train_step(opt, m, 2, rank, world, world == 1 ? 2 : 1);
    double worst = 0;
    for (size_t i = 0; i < m.params.size(); ++i)
      worst = std::max(worst, expect_close(m.params[i], ref.params_after[2][i], 1e-5, what));
    if (rank == 0) std::printf("resume %s: max |param - reference| after step 3 = %.3g\n", what.c_str(), worst);
  };
  codes = spawn(1, [&](int) {  // phase B: 1 process
    Tiny m = Tiny::make();
    load_params(m);
    Optimizer opt(named(m), config(0, 25u << 20), nullptr);
    load_optimizer_state(opt, dir);
    third_step_matches(m, opt, 0, 1, "2 ranks (ZeRO-2) -> 1 process");
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0}));
  port = free_port();
  codes = spawn(2, [&](int rank) {  // phase C: 2 ranks, ZeRO-1 with other buckets
    auto pg = connect(rank, 2, port);
    Tiny m = Tiny::make();
    load_params(m);
    Optimizer opt(named(m), config(1, 1), pg);
    load_optimizer_state(opt, dir);
    third_step_matches(m, opt, rank, 2, "2 ranks (ZeRO-2, 40 B buckets) -> 2 ranks (ZeRO-1, 1 B buckets)");
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
  std::filesystem::remove(dir + "/optimizer.rank1.safetensors");
  codes = spawn(1, [&](int) {
    Tiny m = Tiny::make();
    Optimizer opt(named(m), config(0, 25u << 20), nullptr);
    try {
      load_optimizer_state(opt, dir);
    } catch (const Error& e) {
      std::string w = e.what();
      std::printf("a missing shard: %s\n", w.c_str());
      return w.find("no 'llm.w1.exp_avg'") != std::string::npos || w.find("no '") != std::string::npos ? 0 : 1;
    }
    return 1;
  });
  EXPECT_EQ(codes, (std::vector<int>{0}));
}
