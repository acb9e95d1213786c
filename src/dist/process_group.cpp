// ProcessGroup: TCPStore rendezvous + c10d Gloo/NCCL collectives with timeouts that become PeerErrors.
#include "llava/dist/process_group.h"

#include <torch/torch.h>

#include <chrono>
#include <iostream>
#include <sstream>
#include <thread>

#include "llava/torch_compat.h"

// LibTorch's c10d headers compile their contents only under these macros (its own build defines them).
#if __has_include(<gloo/config.h>)
#define LLAVA_DIST_GLOO 1
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#else
#define LLAVA_DIST_GLOO 0
#endif
#if LLAVA_TORCH_HAS_CUDA && __has_include(<nccl.h>)
#define LLAVA_DIST_NCCL 1
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#else
#define LLAVA_DIST_NCCL 0
#endif

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#if LLAVA_DIST_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#if LLAVA_DIST_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace llava::dist {

using Clock = std::chrono::steady_clock;

struct ProcessGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<compat::C10dBackend> backend;

  // Starts a collective; errors while starting are peer errors when they look like one (a timed-out NCCL
  // communicator setup), configuration errors otherwise (a dtype the backend does not support).
  static PendingOp launch(ProcessGroup& g, const std::string& op,
                          const std::function<c10::intrusive_ptr<c10d::Work>()>& start,
                          std::function<void()> on_done = nullptr);
  static void check(const ProcessGroup& g, const at::Tensor& t, const std::string& op) {
    if (g.failed_) throw PeerError("rank " + std::to_string(g.rank_) + ": " + op +
                                   ": the process group is unusable after an earlier peer failure (exit code 3)");
    if (!t.defined() || !t.is_contiguous())
      throw Error("rank " + std::to_string(g.rank_) + ": " + op + " needs a defined, contiguous tensor");
    if (t.device() != g.device_)
      throw Error("rank " + std::to_string(g.rank_) + ": " + op + " got a tensor on " + t.device().str() + ", the " +
                  g.backend_ + " group works on " + g.device_.str());
  }
};

struct PendingOp::Impl {
  std::shared_ptr<ProcessGroup> group;
  c10::intrusive_ptr<c10d::Work> work;
  std::string op;
  std::function<void()> on_done;
  Clock::time_point started;
  bool done = false;
};

namespace {

std::string first_line(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  return line.size() > 300 ? line.substr(0, 300) + "..." : line;
}

std::string error_text(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return first_line(ce->what_without_backtrace());
  return first_line(e.what());
}

bool looks_like_timeout(const std::string& s) {
  return s.find("imed out") != std::string::npos || s.find("imeout") != std::string::npos;
}

// Errors from a collective that are the caller's (a dtype the backend lacks), not a peer's.
bool looks_like_misuse(const std::string& s) {
  for (const char* k : {"Invalid scalar type", "nvalid argument", "not supported", "unsupported", "Expected ",
                        "must be", "mismatch"})
    if (s.find(k) != std::string::npos) return true;
  return false;
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr == "::1" || addr.rfind("127.", 0) == 0;
}

}  // namespace

// ---------------------------------------------------------------- PendingOp

void PendingOp::wait() {
  if (!impl_ || impl_->done) return;
  Impl& op = *impl_;
  ProcessGroup& g = *op.group;
  const auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(g.timeout());
  try {
    if (g.backend() == "nccl") {
      // NCCL's wait() only orders the current CUDA stream after the collective; poll for completion so a
      // hung peer surfaces here, after `timeout`, instead of in the next synchronising call.
      const auto deadline = Clock::now() + limit;
      while (!op.work->isCompleted()) {
        if (Clock::now() > deadline) g.fail(op.op, "the collective did not complete", true);
        std::this_thread::sleep_for(std::chrono::microseconds(100));
      }
      op.work->wait();
    } else {
      // Gloo enforces the timeout itself (its message is more specific); ours is the backstop.
      op.work->wait(limit + std::chrono::seconds(5));
    }
  } catch (const PeerError&) {
    throw;
  } catch (const std::exception& e) {
    std::string text = error_text(e);
    if (looks_like_misuse(text) && !looks_like_timeout(text))
      throw Error("rank " + std::to_string(g.rank()) + ": " + op.op + " failed: " + text);
    bool timed_out = looks_like_timeout(text) || Clock::now() - op.started >= limit;
    g.fail(op.op, text, timed_out);
  }
  op.done = true;
  op.work.reset();
  if (op.on_done) op.on_done();
  op.on_done = nullptr;
}

// ---------------------------------------------------------------- ProcessGroup

ProcessGroup::ProcessGroup() : impl_(std::make_unique<Impl>()) {}

ProcessGroup::~ProcessGroup() {
  if (failed_ && impl_) {
    // A worker thread may still sit in a collective with a dead peer until Gloo's own timeout; destroying the
    // group would wait for it. The process is about to exit (code 3): let the OS clean up instead.
    (void)impl_->backend.release();
    (void)impl_->store.release();
    return;
  }
#if LLAVA_DIST_NCCL
  if (impl_ && impl_->backend && backend_ == "nccl") {
    try {
      compat::shutdown_backend(*static_cast<c10d::ProcessGroupNCCL*>(impl_->backend.get()));
    } catch (const std::exception& e) {
      std::cerr << "rank " << rank_ << ": shutting down NCCL: " << e.what() << "\n";
    }
  }
#endif
}

bool nccl_available() { return LLAVA_DIST_NCCL; }

std::string resolve_backend(const std::string& ddp_backend, const std::string& device) {
  std::string b = ddp_backend;
  if (b.empty()) b = device.rfind("cuda", 0) == 0 ? "nccl" : "gloo";
  if (b != "gloo" && b != "nccl") throw Error("--ddp_backend '" + ddp_backend + "': expected nccl or gloo");
  if (b == "nccl" && !nccl_available())
    throw Error(std::string("--ddp_backend nccl: this build has no NCCL (LibTorch ") + compat::torch_version_string() +
                (LLAVA_TORCH_HAS_CUDA ? " with CUDA but without nccl.h" : " without CUDA") +
                "); use --ddp_backend gloo");
  if (b == "gloo" && !LLAVA_DIST_GLOO) throw Error("--ddp_backend gloo: this build has no Gloo headers (libgloo-dev)");
  return b;
}

void ProcessGroup::fail(const std::string& op, const std::string& detail, bool timed_out) {
  failed_ = true;
  std::string what = "rank " + std::to_string(rank_) + ": ";
  what += timed_out ? "peer timed out after " + std::to_string(timeout_.count()) + " s in " + op
                    : "a peer failed during " + op;
  throw PeerError(what + " (" + detail + "; backend " + backend_ + ", world size " + std::to_string(world_size_) +
                  ") (exit code 3)");
}

PendingOp ProcessGroup::Impl::launch(ProcessGroup& g, const std::string& op,
                                     const std::function<c10::intrusive_ptr<c10d::Work>()>& start,
                                     std::function<void()> on_done) {
  auto impl = std::make_shared<PendingOp::Impl>();
  impl->group = g.shared_from_this();
  impl->op = op;
  impl->on_done = std::move(on_done);
  impl->started = Clock::now();
  try {
    impl->work = start();
  } catch (const PeerError&) {
    throw;
  } catch (const std::exception& e) {
    std::string text = error_text(e);
    if (!looks_like_misuse(text)) g.fail(op, text, looks_like_timeout(text));
    throw Error("rank " + std::to_string(g.rank_) + ": " + op + " could not start: " + text);
  }
  PendingOp p;
  p.impl_ = std::move(impl);
  return p;
}

std::shared_ptr<ProcessGroup> ProcessGroup::create(const DistEnv& env, const std::string& backend,
                                                   std::chrono::seconds timeout) {
  // World size 1 is a valid group (the trainer makes none for one process; tests use it on one GPU, where NCCL
  // refuses two ranks on the same device).
  if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size)
    throw Error("ProcessGroup::create: rank " + std::to_string(env.rank) + " outside world size " +
                std::to_string(env.world_size));
  if (timeout.count() <= 0) throw Error("--ddp_timeout must be at least 1 second");
  std::string b = resolve_backend(backend, backend == "nccl" ? "cuda" : "cpu");
  std::shared_ptr<ProcessGroup> g(new ProcessGroup());
  g->rank_ = env.rank;
  g->world_size_ = env.world_size;
  g->backend_ = b;
  g->timeout_ = timeout;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(timeout);
  const std::string where = env.master_addr + ":" + std::to_string(env.master_port);

  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = env.world_size;
    so.waitWorkers = false;  // the join count below waits, with the same message on every rank
    so.timeout = ms;
    compat::tcp_store_without_libuv(so);
    g->impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    // Every rank counts itself in; all wait (at most `timeout`) until the count is the world size.
    const std::string key = "llava/joined";
    g->impl_->store->add(key, 1);
    const auto deadline = Clock::now() + ms;
    for (int64_t joined; (joined = g->impl_->store->add(key, 0)) < env.world_size;) {
      if (Clock::now() > deadline)
        throw std::runtime_error(std::to_string(joined) + " of " + std::to_string(env.world_size) + " ranks joined");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const std::exception& e) {
    g->failed_ = true;
    throw PeerError("rank " + std::to_string(env.rank) + ": rendezvous at " + where + " failed within " +
                    std::to_string(timeout.count()) + " s (world size " + std::to_string(env.world_size) +
                    (env.rank == 0 ? ", this rank serves the TCPStore" : "") + "): " + error_text(e) +
                    " (exit code 3)");
  }

  try {
    if (b == "gloo") {
#if LLAVA_DIST_GLOO
      auto opts = c10d::ProcessGroupGloo::Options::create(ms);
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
        std::stringstream ss(ifname);
        std::string name;
        while (std::getline(ss, name, ','))
          if (!name.empty()) opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
      } else if (is_loopback(env.master_addr)) {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      g->impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(g->impl_->store, env.rank, env.world_size, opts);
      g->device_ = c10::Device(c10::kCPU);
#endif
    } else {
#if LLAVA_DIST_NCCL
      int n_dev = static_cast<int>(c10::cuda::device_count());
      if (env.local_rank >= n_dev)
        throw Error("rank " + std::to_string(env.rank) + ": LOCAL_RANK " + std::to_string(env.local_rank) + " but only " +
                    std::to_string(n_dev) + " CUDA device(s) are visible (CUDA_VISIBLE_DEVICES?)");
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(env.local_rank));
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      // NCCL's watchdog is the backstop only: PendingOp::wait reports a hung peer first, with our message.
      opts->timeout = ms + std::chrono::seconds(60);
      g->impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(g->impl_->store, env.rank, env.world_size, opts);
      g->device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
#endif
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    g->failed_ = true;
    throw PeerError("rank " + std::to_string(env.rank) + ": rendezvous at " + where + " failed within " +
                    std::to_string(timeout.count()) + " s (world size " + std::to_string(env.world_size) +
                    ", connecting " + b + "): " + error_text(e) + " (exit code 3)");
  }

  // Every rank is there and the collectives work (and NCCL sets up its communicator now, not mid-step).
  double n = g->allreduce_scalar(1.0);
  if (static_cast<int>(n + 0.5) != env.world_size)
    throw Error("rank " + std::to_string(env.rank) + ": process group sanity check counted " + std::to_string(n) +
                " ranks, expected " + std::to_string(env.world_size));
  return g;
}

// LibTorch 1.13's Gloo has no bfloat16 kernels: bf16 tensors travel as fp32 on Gloo (exact for the values;
// the sums are more accurate than bf16 ones).
static bool widen(const std::string& backend, const at::Tensor& t) {
  return backend == "gloo" && t.scalar_type() == at::kBFloat16;
}

PendingOp ProcessGroup::allreduce_sum_async(const at::Tensor& tensor) {
  Impl::check(*this, tensor, "allreduce");
  const bool wide = widen(backend_, tensor);
  at::Tensor dst = tensor, buf = wide ? tensor.to(at::kFloat) : tensor;
  std::vector<at::Tensor> v{buf};
  std::function<void()> done;
  if (wide) done = [dst, buf]() mutable { dst.copy_(buf); };
  return Impl::launch(
      *this, "allreduce",
      [&] {
        c10d::AllreduceOptions o;
        o.reduceOp = c10d::ReduceOp::SUM;
        return impl_->backend->allreduce(v, o);
      },
      std::move(done));
}

void ProcessGroup::allreduce_sum(at::Tensor& tensor) { allreduce_sum_async(tensor).wait(); }

void ProcessGroup::allreduce_sum(std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return;
  if (tensors.size() == 1 && tensors[0].is_contiguous()) return allreduce_sum(tensors[0]);
  std::vector<at::Tensor> flat;
  for (const auto& t : tensors) {
    if (t.scalar_type() != tensors[0].scalar_type())
      throw Error("rank " + std::to_string(rank_) + ": allreduce of tensors with different dtypes");
    flat.push_back(t.reshape({-1}));
  }
  at::Tensor buf = at::cat(flat);
  allreduce_sum(buf);
  int64_t off = 0;
  for (auto& t : tensors) {
    t.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
    off += t.numel();
  }
}

double ProcessGroup::allreduce_scalar(double value) {
  at::Tensor t = at::full({1}, value, at::TensorOptions().dtype(at::kDouble).device(device_));
  allreduce_sum(t);
  return t.item<double>();
}

PendingOp ProcessGroup::reduce_sum_async(const at::Tensor& tensor, int root) {
  Impl::check(*this, tensor, "reduce");
  if (root < 0 || root >= world_size_) throw Error("reduce: root " + std::to_string(root) + " out of range");
  const bool wide = widen(backend_, tensor);
  at::Tensor dst = tensor, buf = wide ? tensor.to(at::kFloat) : tensor;
  std::vector<at::Tensor> v{buf};
  std::function<void()> done;
  if (wide) done = [dst, buf]() mutable { dst.copy_(buf); };
  return Impl::launch(
      *this, "reduce",
      [&] {
        c10d::ReduceOptions o;
        o.reduceOp = c10d::ReduceOp::SUM;
        o.rootRank = root;
        o.rootTensor = 0;
        return impl_->backend->reduce(v, o);
      },
      std::move(done));
}

void ProcessGroup::broadcast(at::Tensor& tensor, int root) {
  Impl::check(*this, tensor, "broadcast");
  if (root < 0 || root >= world_size_) throw Error("broadcast: root " + std::to_string(root) + " out of range");
  const bool wide = widen(backend_, tensor);
  at::Tensor buf = wide ? tensor.to(at::kFloat) : tensor;
  std::vector<at::Tensor> v{buf};
  Impl::launch(*this, "broadcast", [&] {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.rootTensor = 0;
    return impl_->backend->broadcast(v, o);
  }).wait();
  if (wide) tensor.copy_(buf);
}

void ProcessGroup::barrier() {
  // An allreduce of one element: the same on every backend, and no device guessing (NCCL's barrier has some).
  at::Tensor t = at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device_));
  Impl::check(*this, t, "barrier");
  Impl::launch(*this, "barrier", [&] {
    std::vector<at::Tensor> v{t};
    return impl_->backend->allreduce(v);
  }).wait();
}

}  // namespace llava::dist
