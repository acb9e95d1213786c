// DistEnv: who am I in the job, from torchrun's or SLURM's environment variables.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <sstream>

#include "llava/dist/process_group.h"

#include <torch/cuda.h>

namespace llava::dist {

namespace {

int parse_int(const DistEnv::Lookup& get, const std::string& name, std::optional<int> fallback) {
  std::optional<std::string> v = get(name);
  if (!v || v->empty()) {
    if (fallback) return *fallback;
    throw Error("environment variable " + name + " is not set");
  }
  try {
    size_t used = 0;
    long x = std::stol(*v, &used);
    if (used != v->size() || x < INT32_MIN || x > INT32_MAX) throw std::invalid_argument(*v);
    return static_cast<int>(x);
  } catch (const std::exception&) {
    throw Error("environment variable " + name + "='" + *v + "' is not an integer");
  }
}

// SLURM_TASKS_PER_NODE looks like "8(x2),4": tasks on node 0, 1, 2. Returns the count for node `node`.
std::optional<int> slurm_tasks_on_node(const std::string& spec, int node) {
  int index = 0;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      size_t paren = item.find("(x");
      int count = std::stoi(item.substr(0, paren));
      int repeat = paren == std::string::npos ? 1 : std::stoi(item.substr(paren + 2));
      if (node < index + repeat) return count;
      index += repeat;
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

void validate(const DistEnv& e, const std::string& vars) {
  if (e.world_size < 1) throw Error(vars + ": world size " + std::to_string(e.world_size) + " must be >= 1");
  if (e.rank < 0 || e.rank >= e.world_size)
    throw Error(vars + ": rank " + std::to_string(e.rank) + " is outside [0, " + std::to_string(e.world_size) + ")");
  if (e.local_world_size < 1 || e.local_rank < 0 || e.local_rank >= e.local_world_size)
    throw Error(vars + ": local rank " + std::to_string(e.local_rank) + " is outside [0, " +
                std::to_string(e.local_world_size) + ")");
  if (e.distributed() && (e.master_port < 1 || e.master_port > 65535))
    throw Error(vars + ": MASTER_PORT " + std::to_string(e.master_port) + " is not a TCP port (1-65535)");
}

void read_master(DistEnv& e, const DistEnv::Lookup& get, const std::string& launcher_hint) {
  if (!e.distributed()) return;
  std::optional<std::string> addr = get("MASTER_ADDR");
  if (!addr || addr->empty())
    throw Error("WORLD_SIZE is " + std::to_string(e.world_size) + " (" + e.launcher + ") but MASTER_ADDR is not set" +
                launcher_hint);
  e.master_addr = *addr;
  if (!get("MASTER_PORT") || get("MASTER_PORT")->empty())
    throw Error("WORLD_SIZE is " + std::to_string(e.world_size) + " (" + e.launcher + ") but MASTER_PORT is not set" +
                launcher_hint);
  e.master_port = parse_int(get, "MASTER_PORT", std::nullopt);
}

}  // namespace

DistEnv DistEnv::from_lookup(const Lookup& get) {
  DistEnv e;
  auto has = [&](const char* name) {
    auto v = get(name);
    return v && !v->empty();
  };
  if (has("RANK") || has("WORLD_SIZE")) {
    // torchrun (and torch.distributed.launch --use-env, and mpirun wrappers that export the same names).
    e.launcher = "torchrun";
    e.rank = parse_int(get, "RANK", std::nullopt);
    e.world_size = parse_int(get, "WORLD_SIZE", std::nullopt);
    e.local_world_size = parse_int(get, "LOCAL_WORLD_SIZE", e.world_size);
    e.local_rank = parse_int(get, "LOCAL_RANK", e.local_world_size > 0 ? e.rank % e.local_world_size : 0);
    read_master(e, get, "");
    validate(e, "torchrun variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)");
    return e;
  }
  if (has("SLURM_PROCID") && has("SLURM_NTASKS")) {
    e.launcher = "slurm";
    e.rank = parse_int(get, "SLURM_PROCID", std::nullopt);
    e.world_size = parse_int(get, "SLURM_NTASKS", std::nullopt);
    e.local_rank = parse_int(get, "SLURM_LOCALID", 0);
    std::optional<int> per_node;
    if (has("SLURM_NTASKS_PER_NODE")) per_node = parse_int(get, "SLURM_NTASKS_PER_NODE", std::nullopt);
    else if (has("SLURM_TASKS_PER_NODE"))
      per_node = slurm_tasks_on_node(*get("SLURM_TASKS_PER_NODE"), parse_int(get, "SLURM_NODEID", 0));
    e.local_world_size = per_node ? *per_node : std::max(e.local_rank + 1, 1);
    read_master(e, get,
                ": under srun export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1) "
                "and MASTER_PORT (any free port, the same on every task)");
    validate(e, "SLURM variables (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_TASKS_PER_NODE)");
    return e;
  }
  return e;  // a single process, no process group
}

DistEnv DistEnv::from_environment() {
  return from_lookup([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (!v) return std::nullopt;
    return std::string(v);
  });
}

c10::Device resolve_device(const std::string& device, const DistEnv& env) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    throw Error("--device must be auto, cpu or cuda, got '" + device + "'");
  const bool cuda = device == "cuda" || (device == "auto" && torch::cuda::is_available());
  if (!cuda) return c10::Device(c10::kCPU);
  if (!torch::cuda::is_available())
    throw Error("--device cuda: no CUDA device is visible (or LibTorch is CPU-only)");
  if (env.local_rank >= static_cast<int>(torch::cuda::device_count()))
    throw Error("rank " + std::to_string(env.rank) + ": local rank " + std::to_string(env.local_rank) + " but only " +
                std::to_string(torch::cuda::device_count()) + " CUDA device(s) are visible (CUDA_VISIBLE_DEVICES?)");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
}

std::string DistEnv::describe() const {
  if (!distributed()) return "single process";
  return "rank " + std::to_string(rank) + "/" + std::to_string(world_size) + " (local " + std::to_string(local_rank) +
         "/" + std::to_string(local_world_size) + ", " + launcher + "), master " + master_addr + ":" +
         std::to_string(master_port);
}

}  // namespace llava::dist
