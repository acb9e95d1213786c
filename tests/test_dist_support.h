#pragma once
// Multi-rank test harness: forked ranks over loopback Gloo, and a tiny model with odd sizes whose gradients
// and AdamW steps are known on one process (test_dist.cpp: reducer, collectives, peers; test_optimizer.cpp:
// the trainer's Optimizer on 1 and 2 ranks, every ZeRO stage).
//
// Multi-rank tests fork one process per rank (loopback TCPStore + Gloo on a free port). The parent process never
// runs a torch op (forking after OpenMP started is unsafe), it only forks, waits and checks exit codes; each
// child checks its own numbers, prints them, and exits 0 (pass) or 1 (with the reason on stderr).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "llava/dist/process_group.h"
#include "test_support.h"

namespace llava::testing {

using dist::DistEnv;
using dist::ProcessGroup;

// ------------------------------------------------------------------ harness

// Forks `world` children running fn(rank); returns their exit codes (128 + signal when killed, -1 when they
// ran past limit_s and were killed). With stop_when_rank0_done, the others are killed once rank 0 exits.
inline std::vector<int> spawn(int world, const std::function<int(int)>& fn, double limit_s = 60,
                       bool stop_when_rank0_done = false) {
  std::fflush(stdout);
  std::fflush(stderr);
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int code = 1;
      try {
        at::set_num_threads(1);
        code = fn(r);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "[rank %d] %s\n", r, e.what());
      }
      std::fflush(stdout);
      std::fflush(stderr);
      ::_exit(code);
    }
    pids.push_back(pid);
  }
  std::vector<int> codes(world, -1);
  std::vector<bool> done(world, false);
  auto t0 = std::chrono::steady_clock::now();
  int remaining = world;
  while (remaining > 0) {
    for (int r = 0; r < world; ++r) {
      if (done[r]) continue;
      int status = 0;
      if (::waitpid(pids[r], &status, WNOHANG) == pids[r]) {
        done[r] = true;
        --remaining;
        codes[r] = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
    }
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bool stop = elapsed > limit_s || (stop_when_rank0_done && done[0]);
    if (stop && remaining > 0) {
      for (int r = 0; r < world; ++r)
        if (!done[r]) ::kill(pids[r], SIGKILL);
      for (int r = 0; r < world; ++r)
        if (!done[r]) {
          int status = 0;
          ::waitpid(pids[r], &status, 0);
          codes[r] = elapsed > limit_s ? -1 : 128 + SIGKILL;
          done[r] = true;
        }
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return codes;
}

inline DistEnv loopback_env(int rank, int world, int port) {
  DistEnv e;
  e.rank = rank;
  e.world_size = world;
  e.local_rank = rank;
  e.local_world_size = world;
  e.master_addr = "127.0.0.1";
  e.master_port = port;
  e.launcher = "test";
  return e;
}

inline std::shared_ptr<ProcessGroup> connect(int rank, int world, int port, int timeout_s = 20) {
  return ProcessGroup::create(loopback_env(rank, world, port), "gloo", std::chrono::seconds(timeout_s));
}

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error(what); }

// Throws unless |a - b| <= atol + rtol |b| everywhere; returns the largest |a - b|.
inline double expect_close(const at::Tensor& a, const at::Tensor& b, double atol, const std::string& what, double rtol = 0) {
  if (!a.sizes().equals(b.sizes())) fail(what + ": shapes differ");
  at::Tensor diff = (a.to(at::kDouble) - b.to(at::kDouble)).abs();
  double max_diff = diff.numel() ? diff.max().item<double>() : 0.0;
  at::Tensor bound = atol + rtol * b.to(at::kDouble).abs();
  if (!(diff <= bound).all().item<bool>())
    fail(what + ": max |diff| " + std::to_string(max_diff) + " > tolerance " + std::to_string(atol));
  return max_diff;
}

// ------------------------------------------------------------------ a tiny model with odd sizes

// y = w2 tanh(w1 x + b1) + b2 (5 -> 7 -> 3), plus `u`, used only by the chunk that holds sample 0 (a
// parameter without a gradient on the other ranks; its term does not depend on how the batch is split). 35 + 7 + 21 + 3 + 3 = 69 elements (odd: ZeRO pads).
struct Tiny {
  std::vector<at::Tensor> params;  // w1, b1, w2, b2, u
  std::vector<int> groups{0, 1, 0, 1, 1};  // 0: decay, 1: no decay

  static Tiny make() {
    torch::manual_seed(7);
    Tiny m;
    for (auto shape : std::vector<std::vector<int64_t>>{{7, 5}, {7}, {3, 7}, {3}, {3}})
      m.params.push_back((torch::randn(shape) * 0.5).requires_grad_(true));
    return m;
  }
  std::vector<at::Tensor> detached() const {
    std::vector<at::Tensor> v;
    for (const auto& p : params) v.push_back(p.detach().clone());
    return v;
  }
};

constexpr int64_t kGlobalBatch = 8;

struct TinyBatch {
  at::Tensor x, t;  // [8, 5], [8, 3]
};
inline TinyBatch batch_for_step(int step) {
  torch::manual_seed(100 + step);
  return {torch::randn({kGlobalBatch, 5}), torch::randn({kGlobalBatch, 3})};
}

// Loss of samples [lo, hi), normalised by the global batch (so the chunks' gradients add up to the batch's).
inline at::Tensor chunk_loss(const Tiny& m, const TinyBatch& b, int64_t lo, int64_t hi) {
  const auto& p = m.params;
  at::Tensor x = b.x.slice(0, lo, hi), t = b.t.slice(0, lo, hi);
  at::Tensor y = torch::tanh(x.matmul(p[0].t()) + p[1]).matmul(p[2].t()) + p[3];
  at::Tensor loss = (y - t).square().sum() / static_cast<double>(kGlobalBatch);
  if (lo == 0) loss = loss + p[4].square().sum() * 0.3 + (p[4] * b.x[0].slice(0, 0, 3)).sum() * 0.1;
  return loss;
}

// The reference step: one process, the whole global batch in one backward.
inline void reference_backward(const Tiny& m, const TinyBatch& b, int chunks) {
  at::Tensor total;
  const int64_t c = kGlobalBatch / chunks;
  for (int k = 0; k < chunks; ++k) {
    at::Tensor l = chunk_loss(m, b, k * c, (k + 1) * c);
    total = total.defined() ? total + l : l;
  }
  total.backward();
}

// This rank's micro-batches: world x accum chunks, rank r gets chunks r*accum .. r*accum+accum-1.
template <typename SetSync>
void rank_backward(const Tiny& m, const TinyBatch& b, int rank, int world, int accum, SetSync&& set_sync) {
  const int64_t c = kGlobalBatch / (world * accum);
  for (int k = 0; k < accum; ++k) {
    set_sync(k == accum - 1);
    const int64_t lo = (rank * accum + k) * c;
    chunk_loss(m, b, lo, lo + c).backward();
  }
}

constexpr double kLr0 = 1e-2, kLr1 = 2e-2, kWd0 = 0.1, kMaxNorm = 0.5;

inline std::unique_ptr<torch::optim::AdamW> reference_adamw(const Tiny& m) {
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<at::Tensor>{m.params[0], m.params[2]},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(kLr0).weight_decay(kWd0)));
  groups.emplace_back(std::vector<at::Tensor>{m.params[1], m.params[3], m.params[4]},
                      std::make_unique<torch::optim::AdamWOptions>(torch::optim::AdamWOptions(kLr1).weight_decay(0.0)));
  return std::make_unique<torch::optim::AdamW>(groups, torch::optim::AdamWOptions(kLr0).weight_decay(0.0));
}

// Reference parameters (and pre-clip gradient norms) after each of `steps` AdamW steps on the global batch.
struct Reference {
  std::vector<std::vector<at::Tensor>> params_after;  // [step][param]
  std::vector<double> norms;
};
inline Reference run_reference(int steps) {
  Tiny m = Tiny::make();
  auto opt = reference_adamw(m);
  Reference ref;
  for (int s = 0; s < steps; ++s) {
    opt->zero_grad();
    reference_backward(m, batch_for_step(s), 4);
    ref.norms.push_back(torch::nn::utils::clip_grad_norm_(m.params, kMaxNorm));
    opt->step();
    ref.params_after.push_back(m.detached());
  }
  return ref;
}

}  // namespace llava::testing
