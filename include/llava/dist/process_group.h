#pragma once
// Rendezvous and collectives for data-parallel training.
//
//   DistEnv::from_environment()  torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,
//                                MASTER_ADDR, MASTER_PORT), else SLURM's (SLURM_PROCID, SLURM_NTASKS,
//                                SLURM_LOCALID + MASTER_ADDR/MASTER_PORT), else one process.
//   ProcessGroup::create(...)    a c10d TCPStore at MASTER_ADDR:MASTER_PORT (rank 0 serves it), then
//                                ProcessGroupGloo (CPU) or ProcessGroupNCCL (CUDA; LOCAL_RANK picks the GPU).
//
// Every collective is a sum, and waits at most `timeout`: a peer that died or hangs becomes a PeerError
// ("rank 1: peer timed out after 30 s in allreduce (...) (exit code 3)") on every other rank, never a hang.
// After a PeerError the group is unusable (later calls throw at once) and the process should exit with
// kPeerFailureExitCode.
#include <ATen/core/Tensor.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "llava/error.h"

namespace llava::dist {

// A peer failed, hung, or the rendezvous did not complete. design.md §6: exit code 3.
class PeerError : public Error {
 public:
  using Error::Error;
};
inline constexpr int kPeerFailureExitCode = 3;

struct DistEnv {
  int rank = 0, world_size = 1, local_rank = 0, local_world_size = 1;
  std::string master_addr;  // empty for a single process
  int master_port = 0;
  std::string launcher = "none";  // torchrun | slurm | none

  bool distributed() const { return world_size > 1; }
  // "rank 1/8 (local 1/8, torchrun), master 10.0.0.1:29500" or "single process"
  std::string describe() const;

  // Reads the process environment (see the top of this file). Throws llava::Error naming the variable
  // when one is malformed or missing (e.g. WORLD_SIZE=8 without MASTER_ADDR).
  static DistEnv from_environment();
  // The same rules over any lookup (tests): returns nullopt for unset variables.
  using Lookup = std::function<std::optional<std::string>(const std::string&)>;
  static DistEnv from_lookup(const Lookup& getenv);
};

// --device: "auto" = CUDA where LibTorch has it and a device is visible (LLaVA's users never pass one), else
// the CPU; "cuda" must find one; "cpu". A CUDA rank runs on GPU env.local_rank (torchrun's LOCAL_RANK,
// srun's SLURM_LOCALID). Throws llava::Error for other values.
c10::Device resolve_device(const std::string& device, const DistEnv& env);

// --ddp_backend resolution: "" -> nccl for --device cuda*, gloo otherwise; "nccl"/"gloo" as given.
// Throws llava::Error for other names, and for nccl where this build has no CUDA/NCCL.
std::string resolve_backend(const std::string& ddp_backend, const std::string& device);
// Whether this build can create a ProcessGroupNCCL (LibTorch with CUDA and the NCCL headers).
bool nccl_available();

class ProcessGroup;

// An asynchronous collective in flight. wait() blocks until it is done (at most the group's timeout) and
// throws PeerError on failure; waiting twice is a no-op. A PendingOp not waited for is waited for by nobody:
// always wait.
class PendingOp {
 public:
  PendingOp() = default;
  void wait();
  bool valid() const { return impl_ != nullptr; }
  struct Impl;

 private:
  friend class ProcessGroup;
  std::shared_ptr<Impl> impl_;
};

class ProcessGroup : public std::enable_shared_from_this<ProcessGroup> {
 public:
  // Rendezvous (collective: every rank calls it). `backend`: gloo | nccl (see resolve_backend).
  // With nccl, LOCAL_RANK selects the CUDA device (also made the current device).
  static std::shared_ptr<ProcessGroup> create(const DistEnv& env, const std::string& backend,
                                              std::chrono::seconds timeout);
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const std::string& backend() const { return backend_; }
  std::chrono::seconds timeout() const { return timeout_; }
  // Where collective tensors must live: cpu for gloo, cuda:LOCAL_RANK for nccl.
  c10::Device device() const { return device_; }

  // In place, every rank ends with the sum over ranks. Tensors must be contiguous, on device().
  void allreduce_sum(at::Tensor& tensor);
  void allreduce_sum(std::vector<at::Tensor>& tensors);  // any shapes, one dtype: one flattened collective
  PendingOp allreduce_sum_async(const at::Tensor& tensor);
  double allreduce_scalar(double value);  // sum over ranks (fp64)

  // In place; only `root` ends with the sum over ranks (the others' tensors are scratch afterwards).
  PendingOp reduce_sum_async(const at::Tensor& tensor, int root);

  void broadcast(at::Tensor& tensor, int root);

  void barrier();

  // The error every failed wait throws: "rank R: peer timed out after N s in OP (detail) (exit code 3)".
  [[noreturn]] void fail(const std::string& op, const std::string& detail, bool timed_out);

  struct Impl;  // the c10d objects and helpers (src/dist/process_group.cpp)

 private:
  ProcessGroup();

  int rank_ = 0, world_size_ = 1;
  std::string backend_;
  std::chrono::seconds timeout_{0};
  c10::Device device_{c10::kCPU};
  bool failed_ = false;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llava::dist
