#include "llava/train/state.h"

#include <torch/torch.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>

#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/train/optimizer.h"
#include "llava/safetensors.h"
#include "llava/fs_util.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;

json TrainerState::to_json() const {
  // HF TrainerState's keys (json.dumps(sort_keys=True) order), then ours.
  json j = json::object();
  j["best_metric"] = nullptr;
  j["best_model_checkpoint"] = nullptr;
  j["epoch"] = epoch;
  j["eval_steps"] = 500;
  j["global_step"] = global_step;
  j["is_hyper_param_search"] = false;
  j["is_local_process_zero"] = true;
  j["is_world_process_zero"] = true;
  j["log_history"] = log_history;
  j["logging_steps"] = logging_steps;
  j["max_steps"] = max_steps;
  j["num_input_tokens_seen"] = 0;
  j["num_train_epochs"] = num_train_epochs;
  j["save_steps"] = save_steps;
  j["total_flos"] = 0;
  j["train_batch_size"] = train_batch_size;
  j["trial_name"] = nullptr;
  j["trial_params"] = nullptr;
  j["llava_train"] = {{"next_epoch", next_epoch},
                      {"next_batch", next_batch},
                      {"loss_total", loss_total},
                      {"loss_steps", loss_steps},
                      {"window_loss", window_loss},
                      {"window_steps", window_steps},
                      {"consecutive_bad_steps", consecutive_bad_steps},
                      {"skipped_samples", skipped_samples},
                      {"seen_samples", seen_samples},
                      {"run", run.is_null() ? json::object() : run}};
  return j;
}

TrainerState TrainerState::from_json(const json& j, const std::string& where) {
  TrainerState s;
  try {
    s.global_step = j.at("global_step").get<int64_t>();
    s.epoch = j.value("epoch", 0.0);
    s.max_steps = j.value("max_steps", int64_t{0});
    s.num_train_epochs = j.value("num_train_epochs", 0.0);
    s.logging_steps = j.value("logging_steps", int64_t{0});
    s.save_steps = j.value("save_steps", int64_t{0});
    s.train_batch_size = j.value("train_batch_size", int64_t{0});
    s.log_history = j.value("log_history", json::array());
    const json& l = j.at("llava_train");
    s.next_epoch = l.at("next_epoch").get<int64_t>();
    s.next_batch = l.at("next_batch").get<int64_t>();
    s.loss_total = l.at("loss_total").get<double>();
    s.loss_steps = l.at("loss_steps").get<int64_t>();
    s.window_loss = l.at("window_loss").get<double>();
    s.window_steps = l.at("window_steps").get<int64_t>();
    s.consecutive_bad_steps = l.value("consecutive_bad_steps", int64_t{0});
    s.skipped_samples = l.value("skipped_samples", int64_t{0});
    s.seen_samples = l.value("seen_samples", int64_t{0});
    s.run = l.value("run", json::object());
  } catch (const json::exception& e) {
    throw Error(where + ": not a llava-train trainer_state.json (" + e.what() + ")");
  }
  return s;
}

TrainerState TrainerState::read(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  try {
    return from_json(json::parse(in), path);
  } catch (const json::parse_error& e) {
    throw Error(path + ": bad JSON: " + e.what());
  }
}

namespace {

// path.tmp, then renamed over path: a reader never sees half a file.
void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) throw Error(tmp + ": cannot write");
    out << text;
    if (!out) throw Error(tmp + ": write failed (disk full?)");
  }
  fs::rename(tmp, path);
}

}  // namespace

void TrainerState::write(const std::string& path) const { write_text_atomic(path, to_json().dump(2) + "\n"); }

std::string checkpoint_dir_name(int64_t step) { return "checkpoint-" + std::to_string(step); }

std::string save_checkpoint_atomic(const std::string& output_dir, int64_t step,
                                   const std::function<void(const std::string&)>& fill) {
  const fs::path final_dir = fs::path(output_dir) / checkpoint_dir_name(step);
  fs::path tmp = final_dir;
  tmp += ".tmp";
  llava::remove_tree(tmp);
  fs::create_directories(tmp);
  try {
    fill(tmp.string());
  } catch (...) {
    std::error_code ec;
    llava::remove_tree(tmp, ec);
    throw;
  }
  // An older checkpoint of the same step (a run resumed before it) is replaced; between the two renames
  // neither exists, which a resume treats as "not there" (never as complete).
  if (fs::exists(final_dir)) {
    fs::path old = final_dir;
    old += ".old.tmp";
    llava::remove_tree(old);
    fs::rename(final_dir, old);
    fs::rename(tmp, final_dir);
    llava::remove_tree(old);
  } else {
    fs::rename(tmp, final_dir);
  }
  return final_dir.string();
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (output_dir.empty() || !fs::is_directory(output_dir)) return out;
  static const std::regex kName(R"(checkpoint-(\d+))");
  for (const auto& entry : fs::directory_iterator(output_dir)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !std::regex_match(name, m, kName)) continue;
    if (!fs::exists(entry.path() / "trainer_state.json")) continue;
    out.emplace_back(std::stoll(m[1].str()), entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string find_latest_checkpoint(const std::string& output_dir) {
  auto all = list_checkpoints(output_dir);
  return all.empty() ? std::string() : all.back().second;
}

void rotate_checkpoints(const std::string& output_dir, int limit) {
  if (limit <= 0) return;
  auto all = list_checkpoints(output_dir);
  for (size_t i = 0; i + static_cast<size_t>(limit) < all.size(); ++i) llava::remove_tree(all[i].second);
}

void remove_partial_checkpoints(const std::string& output_dir) {
  if (output_dir.empty() || !fs::is_directory(output_dir)) return;
  static const std::regex kTmp(R"(checkpoint-\d+(\.old)?\.tmp)");
  std::vector<fs::path> stale;
  for (const auto& entry : fs::directory_iterator(output_dir))
    if (std::regex_match(entry.path().filename().string(), kTmp)) stale.push_back(entry.path());
  for (const auto& p : stale) llava::remove_tree(p);
}

namespace {

std::string rng_file(const std::string& dir, int rank, int world_size) {
  const std::string name = world_size > 1 ? "rng_state_" + std::to_string(rank) + ".safetensors" : "rng_state.safetensors";
  return (fs::path(dir) / name).string();
}

}  // namespace

void save_rng_state(const std::string& dir, int rank, int world_size) {
  std::vector<torch::Tensor> host;
  std::vector<TensorToWrite> items;
  auto add = [&](const std::string& name, const at::Generator& gen) {
    host.push_back(gen.get_state().contiguous());
    items.push_back({name, DType::U8, host.back().sizes().vec(), host.back().data_ptr(),
                     static_cast<size_t>(host.back().nbytes())});
  };
  add("cpu", at::detail::getDefaultCPUGenerator());
  if (torch::cuda::is_available()) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
      add("cuda:" + std::to_string(i), at::globalContext().defaultGenerator(at::Device(at::kCUDA, i)));
  }
  write_safetensors(rng_file(dir, rank, world_size), std::move(items));
}

void load_rng_state(const std::string& dir, int rank) {
  std::string path = rng_file(dir, rank, 2);
  if (!fs::exists(path)) path = rng_file(dir, 0, 2);
  if (!fs::exists(path)) path = rng_file(dir, 0, 1);
  auto file = SafetensorsFile::open(path);
  for (const auto& info : file->tensors()) {
    if (info.dtype != DType::U8 || info.shape.size() != 1)
      throw Error(path + ": '" + info.name + "' is not a generator state (uint8 vector)");
    torch::Tensor state = torch::from_blob(const_cast<uint8_t*>(file->data(info)), info.shape, torch::kUInt8).clone();
    at::Generator gen;
    if (info.name == "cpu") {
      gen = at::detail::getDefaultCPUGenerator();
    } else if (info.name.rfind("cuda:", 0) == 0 && torch::cuda::is_available()) {
      const int64_t i = std::atoll(info.name.c_str() + 5);
      if (i < 0 || i >= static_cast<int64_t>(torch::cuda::device_count())) continue;
      gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
    } else {
      continue;
    }
    try {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(state);
    } catch (const c10::Error& e) {
      throw Error(path + ": '" + info.name + "' is not a valid generator state (" + e.what_without_backtrace() + ")");
    }
  }
}

// ---------------------------------------------------------------- optimizer state

namespace {

const char kOptimizerMeta[] = "optimizer.json";
const int kOptimizerFormat = 2;

std::string optimizer_shard(const std::string& dir, int rank) {
  return (fs::path(dir) / ("optimizer.rank" + std::to_string(rank) + ".safetensors")).string();
}

void refuse_old_formats(const std::string& dir) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string n = entry.path().filename().string();
    if (n == "optimizer.exp_avg.safetensors" || n.rfind("zero_shard_", 0) == 0)
      throw Error(dir + ": the optimizer state (" + n + ") is in the format of llava-train 0.1, which this version "
                  "cannot resume; continue from its weights instead (--model_name_or_path " + dir +
                  ", the optimizer and schedule start fresh)");
  }
}

}  // namespace

void save_optimizer_state(const Optimizer& optimizer, const std::string& dir, int rank) {
  const auto tensors = optimizer.state_tensors();
  if (!tensors.empty()) {
    std::vector<TensorToWrite> items;
    for (const auto& [name, t] : tensors)
      items.push_back({name, DType::F32, t.sizes().vec(), t.data_ptr(), static_cast<size_t>(t.nbytes())});
    write_safetensors(optimizer_shard(dir, rank), std::move(items));
  }
  if (rank == 0) {
    json meta = optimizer.describe();
    meta["format"] = kOptimizerFormat;
    write_text_atomic((fs::path(dir) / kOptimizerMeta).string(), meta.dump(1) + "\n");
  }
}

void load_optimizer_state(Optimizer& optimizer, const std::string& dir) {
  refuse_old_formats(dir);
  const std::string meta_path = (fs::path(dir) / kOptimizerMeta).string();
  json meta;
  try {
    std::ifstream in(meta_path);
    if (!in) throw Error(meta_path + ": cannot open (not a checkpoint of this trainer?)");
    meta = json::parse(in);
    if (meta.value("format", 0) != kOptimizerFormat)
      throw Error(meta_path + ": optimizer state format " + std::to_string(meta.value("format", 0)) + ", expected " +
                  std::to_string(kOptimizerFormat));
  } catch (const json::exception& e) {
    throw Error(meta_path + ": bad optimizer metadata: " + e.what());
  }
  const int64_t step = meta.value("step", int64_t{-1});
  if (step < 0) throw Error(meta_path + ": no step count");
  // Every shard's header: which file holds which tensor (each rank needs only its own parameters' entries).
  std::vector<std::shared_ptr<SafetensorsFile>> files;
  std::map<std::string, std::pair<SafetensorsFile*, const TensorInfo*>> where;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string n = entry.path().filename().string();
    if (n.rfind("optimizer.rank", 0) != 0 || entry.path().extension() != ".safetensors") continue;
    files.push_back(SafetensorsFile::open(entry.path().string()));
    for (const auto& info : files.back()->tensors()) where[info.name] = {files.back().get(), &info};
  }
  optimizer.load_state(step, [&](const std::string& name) -> torch::Tensor {
    auto it = where.find(name);
    if (it == where.end()) return torch::Tensor();
    const auto& [file, info] = it->second;
    if (info->dtype != DType::F32)
      throw Error(file->path() + ": '" + name + "' has dtype " + dtype_name(info->dtype) + ", expected F32");
    return torch::from_blob(const_cast<uint8_t*>(file->data(*info)), info->shape, torch::kFloat);
  });
}

// ---------------------------------------------------------------- final model

void save_final_model(const LlavaForCausalLMImpl& model, const std::string& output_dir,
                      const std::string& tokenizer_source_dir) {
  const fs::path out(output_dir), tmp = out / ".final.tmp";
  llava::remove_tree(tmp);
  SaveOptions so;
  so.atomic = false;
  so.tokenizer_source_dir = tokenizer_source_dir;
  save_hf_llava(model, tmp.string(), so);
  for (const auto& entry : fs::directory_iterator(out)) {  // weights of an older final model (other sharding)
    const std::string n = entry.path().filename().string();
    if (entry.is_regular_file() && (n.rfind("model", 0) == 0 || n == "config.json")) fs::remove(entry.path());
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(tmp)) files.push_back(entry.path());
  std::stable_partition(files.begin(), files.end(), [](const fs::path& p) { return p.filename() != "config.json"; });
  for (const auto& f : files) fs::rename(f, out / f.filename());
  llava::remove_tree(tmp);
}

}  // namespace llava
