// Distributed training pieces: DistEnv parsing, Gloo collectives, GradientSync (DDP), ZeroOptimizer (ZeRO 0/1/2)
// against single-process references, optimizer-state resume across world sizes, dead/hung peers, `plan`.
//
// Multi-rank tests fork one process per rank (loopback TCPStore + Gloo on a free port). The parent process never
// runs a torch op (forking after OpenMP started is unsafe), it only forks, waits and checks exit codes; each
// child checks its own numbers, prints them, and exits 0 (pass) or 1 (with the reason on stderr).
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
#include "llava/dist/plan.h"
#include "llava/dist/process_group.h"
#include "llava/dist/zero.h"
#include "test_support.h"
#include "llava/fs_util.h"

using namespace llava;
using namespace llava::dist;
namespace fs = std::filesystem;
using llava::testing::free_port;

namespace {

// ------------------------------------------------------------------ harness

// Forks `world` children running fn(rank); returns their exit codes (128 + signal when killed, -1 when they
// ran past limit_s and were killed). With stop_when_rank0_done, the others are killed once rank 0 exits.
std::vector<int> spawn(int world, const std::function<int(int)>& fn, double limit_s = 60,
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

DistEnv loopback_env(int rank, int world, int port) {
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

std::shared_ptr<ProcessGroup> connect(int rank, int world, int port, int timeout_s = 20) {
  return ProcessGroup::create(loopback_env(rank, world, port), "gloo", std::chrono::seconds(timeout_s));
}

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error(what); }

// Throws unless |a - b| <= atol + rtol |b| everywhere; returns the largest |a - b|.
double expect_close(const at::Tensor& a, const at::Tensor& b, double atol, const std::string& what, double rtol = 0) {
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

struct Batch {
  at::Tensor x, t;  // [8, 5], [8, 3]
};
Batch batch_for_step(int step) {
  torch::manual_seed(100 + step);
  return {torch::randn({kGlobalBatch, 5}), torch::randn({kGlobalBatch, 3})};
}

// Loss of samples [lo, hi), normalised by the global batch (so the chunks' gradients add up to the batch's).
at::Tensor chunk_loss(const Tiny& m, const Batch& b, int64_t lo, int64_t hi) {
  const auto& p = m.params;
  at::Tensor x = b.x.slice(0, lo, hi), t = b.t.slice(0, lo, hi);
  at::Tensor y = torch::tanh(x.matmul(p[0].t()) + p[1]).matmul(p[2].t()) + p[3];
  at::Tensor loss = (y - t).square().sum() / static_cast<double>(kGlobalBatch);
  if (lo == 0) loss = loss + p[4].square().sum() * 0.3 + (p[4] * b.x[0].slice(0, 0, 3)).sum() * 0.1;
  return loss;
}

// The reference step: one process, the whole global batch in one backward.
void reference_backward(const Tiny& m, const Batch& b, int chunks) {
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
void rank_backward(const Tiny& m, const Batch& b, int rank, int world, int accum, SetSync&& set_sync) {
  const int64_t c = kGlobalBatch / (world * accum);
  for (int k = 0; k < accum; ++k) {
    set_sync(k == accum - 1);
    const int64_t lo = (rank * accum + k) * c;
    chunk_loss(m, b, lo, lo + c).backward();
  }
}

constexpr double kLr0 = 1e-2, kLr1 = 2e-2, kWd0 = 0.1, kMaxNorm = 0.5;

std::unique_ptr<torch::optim::AdamW> reference_adamw(const Tiny& m) {
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
Reference run_reference(int steps) {
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

std::vector<ParamGroup> zero_groups() { return {{kLr0, kWd0}, {kLr1, 0.0}}; }

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

TEST(DistCollectives, AllreduceBroadcastGatherScatterBarrier) {
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
    // all_gather: rank k contributes [k*10, k*10+1, k*10+2]
    at::Tensor in = torch::arange(3, torch::kFloat) + 10 * r, out = torch::empty({6});
    pg->all_gather(in, out);
    expect_close(out, torch::tensor({0.f, 1.f, 2.f, 10.f, 11.f, 12.f}), 0, "all_gather");
    // reduce_scatter: input of rank k = arange(6) * (k + 1); sum = 3 * arange(6); rank k keeps chunk k
    at::Tensor rs_in = torch::arange(6, torch::kFloat) * (r + 1), rs_out = torch::empty({3});
    pg->reduce_scatter_sum(rs_in, rs_out);
    expect_close(rs_out, (torch::arange(3, torch::kFloat) + 3 * r) * 3, 0, "reduce_scatter");
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
    if (rank == 0) std::printf("collectives: allreduce, broadcast, all_gather, reduce_scatter, bf16, barrier OK\n");
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

// ------------------------------------------------------------------ DDP

// GradientSync on 2 ranks (each half the batch, optionally in 2 micro-steps) gives every rank the gradient
// of the whole batch on one process; parameters start equal through broadcast_parameters.
TEST(DistGradientSync, TwoRanksEqualTheDoubledBatch) {
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
      Batch b = batch_for_step(0);
      reference_backward(ref, b, 4);

      auto pg = connect(rank, world, port);
      Tiny m = Tiny::make();
      if (rank == 1) {
        torch::NoGradGuard ng;
        for (auto& p : m.params) p.add_(1.0);  // broadcast_parameters must undo this
      }
      broadcast_parameters(*pg, m.params);
      for (size_t i = 0; i < m.params.size(); ++i) expect_close(m.params[i], ref.params[i], 0, "broadcast parameter");
      GradientSync sync(pg, m.params, c.cap);
      double worst = 0;
      for (int step = 0; step < 2; ++step) {  // twice: zero_grad must reset everything
        rank_backward(m, b, rank, world, c.accum, [&](bool s) { sync.set_sync(s); });
        sync.finish();
        for (size_t i = 0; i < m.params.size(); ++i)
          worst = std::max(worst, expect_close(m.params[i].grad(), ref.params[i].grad(), 1e-6,
                                               std::string(c.name) + ": grad of parameter " + std::to_string(i)));
        sync.zero_grad();
        for (auto& p : m.params)
          if (p.grad().abs().max().item<double>() != 0) fail("zero_grad left a gradient");
      }
      if (rank == 0)
        std::printf("GradientSync (%s, %zu buckets): max |grad - reference| = %.3g\n", c.name, sync.num_buckets(),
                    worst);
      return 0;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0})) << c.name;
  }
}

// DDP + torch's own AdamW on every rank, with the average convention (each rank's loss is its own mean:
// finish(1 / world_size)), over 3 steps, equals the single-process run.
TEST(DistGradientSync, AverageScaleWithTorchAdamW) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    Reference ref = run_reference(3);
    auto pg = connect(rank, world, port);
    Tiny m = Tiny::make();
    auto opt = reference_adamw(m);
    GradientSync sync(pg, m.params, 64);
    for (int s = 0; s < 3; ++s) {
      Batch b = batch_for_step(s);
      // this rank's loss averaged over its own half, times world: finish(1/world) restores the global scale
      sync.set_sync(true);
      const int64_t half = kGlobalBatch / world;
      at::Tensor l;
      for (int k = 0; k < 2; ++k) {
        at::Tensor part = chunk_loss(m, b, rank * half + k * half / 2, rank * half + (k + 1) * half / 2);
        l = l.defined() ? l + part : part;
      }
      (l * world).backward();
      sync.finish(1.0 / world);
      double norm = torch::nn::utils::clip_grad_norm_(m.params, kMaxNorm);
      if (std::abs(norm - ref.norms[s]) > 1e-5 * ref.norms[s]) fail("grad norm differs");
      opt->step();
      sync.zero_grad();
      for (size_t i = 0; i < m.params.size(); ++i)
        expect_close(m.params[i], ref.params_after[s][i], 1e-5, "DDP+AdamW step " + std::to_string(s));
    }
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
}

// ------------------------------------------------------------------ ZeRO

// ZeroOptimizer stages 0, 1, 2 on 2 ranks (tiny and large buckets, with and without accumulation) over 3 steps
// equal torch AdamW on the whole batch in one process (grad norm, clipping, two lr/decay groups).
TEST(DistZero, StagesEqualPlainAdamW) {
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
      ZeroOptimizer opt(pg, m.params, m.groups, zero_groups(), AdamWConfig{}, c.stage, c.cap);
      if (opt.num_shards() != (c.stage == 0 ? 1 : 2)) fail("num_shards");
      double worst = 0, worst_norm = 0;
      for (int s = 0; s < 3; ++s) {
        rank_backward(m, batch_for_step(s), rank, world, c.accum, [&](bool sy) { opt.set_sync(sy); });
        opt.finish_gradients();
        double norm = opt.clip_grad_norm(kMaxNorm);
        worst_norm = std::max(worst_norm, std::abs(norm - ref.norms[s]) / ref.norms[s]);
        if (std::abs(norm - ref.norms[s]) > 1e-5 * ref.norms[s])
          fail(name + ": grad norm " + std::to_string(norm) + " vs " + std::to_string(ref.norms[s]));
        opt.step();
        opt.zero_grad();
        for (size_t i = 0; i < m.params.size(); ++i)
          worst = std::max(worst, expect_close(m.params[i], ref.params_after[s][i], 1e-5,
                                               name + ": step " + std::to_string(s) + " parameter " + std::to_string(i)));
        if (c.stage == 2)
          for (auto& p : m.params)
            if (p.grad().defined()) fail(name + ": stage 2 kept a full gradient");
      }
      if (rank == 0)
        std::printf("ZeRO %s: shard %lld of 69 elements, max |param - reference| = %.3g, grad norm rel. diff %.3g\n",
                    name.c_str(), static_cast<long long>(opt.shard_numel()), worst, worst_norm);
      return 0;
    });
    EXPECT_EQ(codes, (std::vector<int>{0, 0})) << name;
  }
}

// bf16 parameters (bf16 gradients and buckets, fp32 master weights; Gloo reduces bf16 as fp32): ZeRO-1 and
// ZeRO-2 end where stage 0 ends.
TEST(DistZero, Bf16ParametersAllStagesAgree) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    auto pg = connect(rank, world, port);
    std::vector<std::vector<at::Tensor>> finals;
    for (int stage = 0; stage <= 2; ++stage) {
      Tiny m = Tiny::make();
      for (auto& p : m.params) p = p.detach().to(torch::kBFloat16).requires_grad_(true);
      ZeroOptimizer opt(pg, m.params, m.groups, zero_groups(), AdamWConfig{}, stage, 40);
      for (int s = 0; s < 3; ++s) {
        Batch b = batch_for_step(s);
        b.x = b.x.to(torch::kBFloat16);
        b.t = b.t.to(torch::kBFloat16);
        rank_backward(m, b, rank, world, 1, [&](bool sy) { opt.set_sync(sy); });
        opt.finish_gradients();
        opt.clip_grad_norm(kMaxNorm);
        opt.step();
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

// One process, no process group: the same optimizer is plain AdamW with fp32 master weights.
TEST(DistZero, SingleProcessIsPlainAdamW) {
  auto codes = spawn(1, [&](int) {
    Reference ref = run_reference(3);
    Tiny m = Tiny::make();
    ZeroOptimizer opt(nullptr, m.params, m.groups, zero_groups(), AdamWConfig{}, 2, 1 << 20);
    for (int s = 0; s < 3; ++s) {
      rank_backward(m, batch_for_step(s), 0, 1, 2, [&](bool sy) { opt.set_sync(sy); });
      opt.finish_gradients();
      opt.clip_grad_norm(kMaxNorm);
      opt.step();
      opt.zero_grad();
      for (size_t i = 0; i < m.params.size(); ++i) expect_close(m.params[i], ref.params_after[s][i], 1e-5, "1 process");
    }
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0}));
}

// Optimizer state written by 2 ranks (ZeRO-2) resumes on 1 process and on 2 ranks with another bucket layout
// (ZeRO-1); the step after resuming equals the uninterrupted reference.
TEST(DistZero, ResumeAcrossWorldSizes) {
  const std::string dir = llava::testing::temp_dir("dist_resume");
  auto save_state = [&](const ZeroShardState& s) {
    for (const auto& [name, t] : s.to_tensors())
      torch::save(t, dir + "/shard" + std::to_string(s.shard_rank) + "." + name + ".pt");
  };
  auto read_shard = [dir](int64_t k) {
    std::map<std::string, at::Tensor> t;
    for (const char* name : {"zero.meta", "zero.param_numels", "zero.segments", "zero.master", "zero.exp_avg",
                             "zero.exp_avg_sq"}) {
      at::Tensor x;
      torch::load(x, dir + "/shard" + std::to_string(k) + "." + name + ".pt");
      t[name] = x;
    }
    return ZeroShardState::from_tensors(t, "shard " + std::to_string(k));
  };
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

  // phase A: 2 ranks, ZeRO-2, 40-byte buckets, 2 steps, save
  int port = free_port();
  auto codes = spawn(2, [&](int rank) {
    auto pg = connect(rank, 2, port);
    Tiny m = Tiny::make();
    ZeroOptimizer opt(pg, m.params, m.groups, zero_groups(), AdamWConfig{}, 2, 40);
    for (int s = 0; s < 2; ++s) {
      rank_backward(m, batch_for_step(s), rank, 2, 1, [&](bool sy) { opt.set_sync(sy); });
      opt.finish_gradients();
      opt.clip_grad_norm(kMaxNorm);
      opt.step();
      opt.zero_grad();
    }
    save_state(opt.state());
    if (rank == 0) save_params(m);
    return 0;
  });
  ASSERT_EQ(codes, (std::vector<int>{0, 0}));

  auto third_step_matches = [&](Tiny& m, ZeroOptimizer& opt, int rank, int world, const std::string& what) {
    if (opt.step_count() != 2) fail(what + ": step count " + std::to_string(opt.step_count()));
    Reference ref = run_reference(3);
    rank_backward(m, batch_for_step(2), rank, world, world == 1 ? 2 : 1, [&](bool sy) { opt.set_sync(sy); });
    opt.finish_gradients();
    opt.clip_grad_norm(kMaxNorm);
    opt.step();
    double worst = 0;
    for (size_t i = 0; i < m.params.size(); ++i)
      worst = std::max(worst, expect_close(m.params[i], ref.params_after[2][i], 1e-5, what));
    if (rank == 0) std::printf("resume %s: max |param - reference| after step 3 = %.3g\n", what.c_str(), worst);
  };
  // phase B: 1 process
  codes = spawn(1, [&](int) {
    Tiny m = Tiny::make();
    load_params(m);
    ZeroOptimizer opt(nullptr, m.params, m.groups, zero_groups(), AdamWConfig{}, 0, 25u << 20);
    opt.load_state(2, read_shard);
    third_step_matches(m, opt, 0, 1, "2 ranks (ZeRO-2) -> 1 process");
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0}));
  // phase C: 2 ranks, ZeRO-1 with other buckets
  port = free_port();
  codes = spawn(2, [&](int rank) {
    auto pg = connect(rank, 2, port);
    Tiny m = Tiny::make();
    load_params(m);
    ZeroOptimizer opt(pg, m.params, m.groups, zero_groups(), AdamWConfig{}, 1, 1);
    opt.load_state(2, read_shard);
    third_step_matches(m, opt, rank, 2, "2 ranks (ZeRO-2, 40 B buckets) -> 2 ranks (ZeRO-1, 1 B buckets)");
    return 0;
  });
  EXPECT_EQ(codes, (std::vector<int>{0, 0}));
  // a missing shard is an error, not a silent partial load
  codes = spawn(1, [&](int) {
    Tiny m = Tiny::make();
    ZeroOptimizer opt(nullptr, m.params, m.groups, zero_groups(), AdamWConfig{}, 0, 25u << 20);
    try {
      opt.load_state(1, read_shard);  // only shard 0 of 2
    } catch (const Error& e) {
      std::string w = e.what();
      return w.find("says it is shard 0 of 2") != std::string::npos ? 0 : 1;
    }
    return 1;
  });
  EXPECT_EQ(codes, (std::vector<int>{0}));
  llava::remove_tree(dir);
}

// ------------------------------------------------------------------ dead and hung peers

// Rank 1 dies before the backward; rank 0's GradientSync::finish reports it (not a hang).
TEST(DistPeerFailure, DeadPeerIsAnErrorOnTheOtherRank) {
  const int world = 2, port = free_port();
  auto codes = spawn(world, [&](int rank) {
    auto pg = connect(rank, world, port, 4);
    Tiny m = Tiny::make();
    GradientSync sync(pg, m.params, 1 << 20);
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
