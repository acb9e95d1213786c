// The training run, top to bottom: settings -> data -> model and stage -> optimizer and schedule -> resume ->
// the step loop (micro-batches: forward, backward; then normalise, norm, NaN guard, clip, AdamW, log, save)
// -> final model. LLaVA's train.py + HF Trainer (4.37, with the 4.46+ token-count loss normalisation) are
// the reference; README item 10 of the llava-tiny fixture pins the numbers.
#include "llava/train/trainer.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <iostream>
#include <limits>
#include <memory>
#include <optional>
#include <regex>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llava/dist/ddp.h"
#include "llava/dist/process_group.h"
#include "llava/dist/zero.h"
#include "llava/error.h"
#include "llava/safetensors.h"
#include "llava/model/checkpoint.h"
#include "llava/model/llava.h"
#include "llava/pipeline.h"
#include "llava/sampler.h"
#include "llava/train/loader.h"
#include "llava/train/log.h"
#include "llava/train/lora.h"
#include "llava/train/optimizer.h"
#include "llava/train/schedule.h"
#include "llava/train/state.h"
#include "llava/fs_util.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------------------------------ signals

namespace {
std::atomic<bool> g_stop_requested{false};

extern "C" void on_stop_signal(int sig) {
  g_stop_requested.store(true);
  const char msg[] = "\nllava-train: signal received; finishing the current step, then saving a checkpoint "
                     "(send it again to quit at once)\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  std::signal(sig, SIG_DFL);  // a second Ctrl-C kills
}

// Installs the SIGINT/SIGTERM handlers for the duration of the run.
struct StopSignals {
  struct sigaction old_int {}, old_term {};
  StopSignals() {
    g_stop_requested.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int, nullptr);
    sigaction(SIGTERM, &old_term, nullptr);
  }
};
}  // namespace

void request_stop() { g_stop_requested.store(true); }

// ------------------------------------------------------------------------------------------ helpers

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// HF: logging_steps/save_steps below 1 are a fraction of the run's steps.
int64_t steps_option(double value, int64_t total_steps) {
  if (value <= 0) return 0;
  if (value < 1) return static_cast<int64_t>(std::ceil(value * static_cast<double>(total_steps)));
  return static_cast<int64_t>(value);
}

torch::Device device_of(const Options& o) {
  if (o.device == "cpu") return torch::kCPU;
  if (o.device == "cuda") {
    if (!torch::cuda::is_available()) throw Error("--device cuda: no CUDA device is visible (or LibTorch is CPU-only)");
    const char* local = std::getenv("LOCAL_RANK");
    return torch::Device(torch::kCUDA, local ? std::atoi(local) : 0);
  }
  throw Error("--device must be cpu or cuda, got '" + o.device + "'");
}

void check_options(const Options& o) {
  if (o.output_dir.empty()) throw Error("train: --output_dir is required");
  if (o.per_device_train_batch_size < 1) throw Error("--per_device_train_batch_size must be >= 1");
  if (o.gradient_accumulation_steps < 1) throw Error("--gradient_accumulation_steps must be >= 1");
  if (o.max_steps <= 0 && o.num_train_epochs <= 0) throw Error("give --num_train_epochs > 0 or --max_steps > 0");
  if (o.on_bad_sample != "skip" && o.on_bad_sample != "fail")
    throw Error("--on_bad_sample must be skip or fail, got '" + o.on_bad_sample + "'");
  if (o.max_bad_steps < 1) throw Error("--max_bad_steps must be >= 1");
  if (o.zero_stage < 0 || o.zero_stage > 2) throw Error("--zero_stage must be 0, 1 or 2, got " + std::to_string(o.zero_stage));
  if (o.ddp_timeout < 1) throw Error("--ddp_timeout must be >= 1 (seconds)");
  if (o.ddp_bucket_cap_mb < 1) throw Error("--ddp_bucket_cap_mb must be >= 1");
}

// LLaVA's train(): what trains in each stage, in its order. Vision tower frozen unless unfrozen; finetune
// trains the LLM (embed_tokens, layers, norm, lm_head) and the projector; --freeze_backbone freezes the LLM
// body (LLaVA's model.model.requires_grad_(False): lm_head stays trainable); LoRA freezes the whole LLM and
// trains the adapters; --tune_mm_mlp_adapter trains the projector only; then --freeze_mm_mlp_adapter and
// --unfreeze_mm_vision_tower adjust.
std::string set_trainable(LlavaForCausalLMImpl& model, const Options& o) {
  for (auto& item : model.named_parameters()) {
    const std::string& name = item.key();
    const bool vision = starts_with(name, "vision_tower.");
    const bool projector = starts_with(name, "multi_modal_projector.");
    const bool adapter = name.find(".lora.") != std::string::npos;
    bool train = false;
    if (o.tune_mm_mlp_adapter) train = projector;
    else if (adapter || projector) train = true;
    else if (!vision) train = !o.lora_enable && !(o.freeze_backbone && starts_with(name, "language_model.model."));
    if (projector && o.freeze_mm_mlp_adapter) train = false;
    if (vision && o.unfreeze_mm_vision_tower) train = true;
    item.value().set_requires_grad(train);
  }
  if (o.tune_mm_mlp_adapter) return "pretrain (projector only)";
  if (o.lora_enable) return "finetune with LoRA";
  return o.freeze_backbone ? "finetune (LLM body frozen)" : "finetune";
}

// This rank's micro-batches, epoch after epoch, from a resumable position (epoch, batch within the epoch).
class BatchStream {
 public:
  BatchStream(const DataPipeline& data, const Sampler& sampler, LoaderOptions options, int64_t epoch, int64_t batch)
      : data_(data), sampler_(sampler), options_(options), per_epoch_(sampler.batches_per_epoch()) {
    open(epoch, batch);
  }
  // The next micro-batch, starting the next epoch when this one is done.
  Batch next() {
    if (batch_ >= per_epoch_) open(epoch_ + 1, 0);
    Batch b;
    if (!loader_->next(b)) throw std::logic_error("BatchStream: loader ended early");
    ++batch_;
    return b;
  }
  bool epoch_done() const { return batch_ >= per_epoch_; }
  int64_t epoch() const { return epoch_; }
  int64_t batch() const { return batch_; }  // micro-batches of the current epoch handed out
  int64_t per_epoch() const { return per_epoch_; }

 private:
  void open(int64_t epoch, int64_t first) {
    auto batches = sampler_.rank_batches(epoch);
    batches.erase(batches.begin(), batches.begin() + std::min<int64_t>(first, batches.size()));
    loader_.reset();  // stop the old workers before the new ones start
    loader_ = std::make_unique<DataLoader>(*data_.dataset, data_.example, std::move(batches), options_);
    epoch_ = epoch;
    batch_ = first;
  }
  const DataPipeline& data_;
  const Sampler& sampler_;
  LoaderOptions options_;
  int64_t per_epoch_, epoch_ = 0, batch_ = 0;
  std::unique_ptr<DataLoader> loader_;
};

// Prints the first few bad samples and warnings with their ids; after that they are only counted.
class SampleProblems {
 public:
  void report(const Batch& b) {
    for (const auto& e : b.errors) print("warning: skipping bad sample: " + e);
    for (const auto& w : b.warnings) print("warning: " + w);
  }

 private:
  void print(const std::string& line) {
    if (++printed_ <= kMax) std::cerr << line << "\n";
    if (printed_ == kMax) std::cerr << "(further bad samples and warnings are counted in metrics.jsonl, not printed)\n";
  }
  static constexpr int kMax = 10;
  int printed_ = 0;
};

std::string join_ids(const std::vector<std::string>& ids, size_t max = 8) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < max; ++i) s += (i ? ", " : "") + ids[i];
  if (ids.size() > max) s += ", ... (" + std::to_string(ids.size()) + " samples)";
  return s;
}

// One metrics.jsonl line (keys in this order; non-finite numbers as null).
nlohmann::ordered_json step_json(const StepRecord& r, double projector_lr) {
  using ojson = nlohmann::ordered_json;
  auto num = [](double v) { return std::isfinite(v) ? ojson(v) : ojson(nullptr); };
  ojson j = {{"step", r.step},
            {"epoch", r.epoch},
            {"loss", num(r.loss)},
            {"grad_norm", num(r.grad_norm)},
            {"learning_rate", r.learning_rate},
            {"num_tokens", r.num_tokens},
            {"num_target_tokens", r.num_target_tokens},
            {"num_samples", r.num_samples},
            {"step_time_s", r.step_time_s},
            {"data_wait_s", r.data_wait_s},
            {"tokens_per_s", r.step_time_s > 0 ? r.num_tokens / r.step_time_s : 0.0},
            {"samples_per_s", r.step_time_s > 0 ? r.num_samples / r.step_time_s : 0.0},
            {"skipped_samples", r.skipped_samples},
            {"update_skipped", r.update_skipped}};
  if (projector_lr >= 0) j["projector_learning_rate"] = projector_lr;
  return j;
}

// Writes the final model into output_dir (which also holds checkpoints and metrics, so it cannot be swapped
// as a whole): files go to output_dir/.final.tmp first and are then renamed in, config.json last, so the
// directory only looks like a model once the weights are all there.
void save_final_model(LlavaForCausalLMImpl& model, const Options& o) {
  const fs::path out(o.output_dir), tmp = out / ".final.tmp";
  llava::remove_tree(tmp);
  SaveOptions so;
  so.atomic = false;
  so.tokenizer_source_dir = o.model_name_or_path;
  save_hf_llava(model, tmp.string(), so);
  for (const auto& entry : fs::directory_iterator(out)) {  // weights of an older final model (other sharding)
    const std::string n = entry.path().filename().string();
    if (entry.is_regular_file() && (starts_with(n, "model") || n == "config.json")) fs::remove(entry.path());
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(tmp)) files.push_back(entry.path());
  std::stable_partition(files.begin(), files.end(), [](const fs::path& p) { return p.filename() != "config.json"; });
  for (const auto& f : files) fs::rename(f, out / f.filename());
  llava::remove_tree(tmp);
}

// ZeRO optimizer state in checkpoints: DIR/zero_shard_<r>_of_<n>.safetensors, one per shard (stage 0: one).
std::string zero_shard_file(const std::string& dir, int64_t r, int64_t n) {
  return (fs::path(dir) / ("zero_shard_" + std::to_string(r) + "_of_" + std::to_string(n) + ".safetensors")).string();
}

void save_zero_shard(const dist::ZeroShardState& st, const std::string& dir) {
  const auto tensors = st.to_tensors();
  std::vector<torch::Tensor> host;
  std::vector<TensorToWrite> items;
  for (const auto& [name, t] : tensors) {
    host.push_back(t.to(torch::kCPU).contiguous());
    const torch::Tensor& h = host.back();
    DType dt = DType::F32;
    if (h.scalar_type() == torch::kLong) dt = DType::I64;
    else if (h.scalar_type() == torch::kDouble) dt = DType::F64;
    else if (h.scalar_type() != torch::kFloat) throw Error("zero shard: unexpected dtype of " + name);
    items.push_back({name, dt, h.sizes().vec(), h.data_ptr(), static_cast<size_t>(h.nbytes())});
  }
  write_safetensors(zero_shard_file(dir, st.shard_rank, st.num_shards), std::move(items));
}

dist::ZeroShardState read_zero_shard(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::map<std::string, torch::Tensor> t;
  for (const auto& info : f->tensors()) {
    torch::ScalarType st = torch::kFloat;
    if (info.dtype == DType::I64) st = torch::kLong;
    else if (info.dtype == DType::F64) st = torch::kDouble;
    else if (info.dtype != DType::F32) throw Error(path + ": unexpected dtype of " + info.name);
    t[info.name] = torch::from_blob(const_cast<uint8_t*>(f->data(info)), info.shape, st).clone();
  }
  return dist::ZeroShardState::from_tensors(t, path);
}

// The number of shards a checkpoint's ZeRO state was written with (0: none, i.e. a single-process AdamW checkpoint).
int64_t saved_zero_shards(const std::string& dir) {
  static const std::regex kName(R"(zero_shard_0_of_(\d+)\.safetensors)");
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string name = entry.path().filename().string();
    if (std::regex_match(name, m, kName)) return std::stoll(m[1].str());
  }
  return 0;
}

}  // namespace

// ------------------------------------------------------------------------------------------ the run

TrainResult train(const Options& o, const TrainHooks& hooks) {
  const auto run_start = Clock::now();
  check_options(o);
  // ---- processes: torchrun/SLURM variables -> a process group (Gloo on cpu, NCCL on cuda); none for one process
  const dist::DistEnv env = dist::DistEnv::from_environment();
  std::shared_ptr<dist::ProcessGroup> pg;
  if (env.distributed()) {
    std::cerr << "distributed: " << env.describe() << ", zero_stage " << o.zero_stage << "\n";
    pg = dist::ProcessGroup::create(env, dist::resolve_backend(o.ddp_backend, o.device),
                                    std::chrono::seconds(o.ddp_timeout));
  }
  const int rank = pg ? pg->rank() : 0, world = pg ? pg->world_size() : 1;
  const bool main_rank = rank == 0;  // writes logs, metrics, the model; the other ranks wait at barriers
  if (main_rank) {
    fs::create_directories(o.output_dir);
    remove_partial_checkpoints(o.output_dir);
  }
  if (pg) pg->barrier();
  torch::manual_seed(static_cast<uint64_t>(o.seed));
  const torch::Device device = device_of(o);
  if (device.is_cuda()) {
    at::globalContext().setAllowTF32CuBLAS(o.tf32);
    at::globalContext().setAllowTF32CuDNN(o.tf32);
  }

  // ---- data: tokenizer, template, image preprocessing, dataset index; the sampler fixes every epoch's order
  auto data = make_data_pipeline(o, /*needs_dataset=*/true);
  const Dataset& dataset = *data->dataset;
  if (dataset.size() == 0) throw Error(o.data_path + ": no samples");
  std::vector<int32_t> modality_lengths(dataset.size());
  for (size_t i = 0; i < dataset.size(); ++i) modality_lengths[i] = dataset.modality_length(i);
  // --group_by_length_window sorts by an estimate of the sequence's real length: LLaVA's word count plus the
  // positions its images take (a 2-4-image sample is long even with few words).
  std::vector<int32_t> sort_lengths;
  if (o.group_by_length_window > 0) {
    sort_lengths.resize(dataset.size());
    for (size_t i = 0; i < dataset.size(); ++i)
      sort_lengths[i] = std::abs(modality_lengths[i]) + dataset.image_count(i) * data->example.image_feature_positions;
  }
  SamplerOptions so;
  so.seed = static_cast<uint64_t>(o.seed);
  so.shuffle = o.shuffle;
  so.group_by_modality_length = o.group_by_modality_length;
  so.group_by_length_window = o.group_by_length_window;
  so.batch_size = o.per_device_train_batch_size;
  so.gradient_accumulation_steps = o.gradient_accumulation_steps;
  so.world_size = world;
  so.rank = rank;
  Sampler sampler(std::move(modality_lengths), so, std::move(sort_lengths));
  const int64_t batches_per_epoch = sampler.batches_per_epoch();
  const int64_t accum = o.gradient_accumulation_steps;
  // An optimizer step every `accum` micro-batches and at the end of each epoch (transformers >= 4.46).
  const int64_t steps_per_epoch = (batches_per_epoch + accum - 1) / accum;
  const int64_t total_steps = o.max_steps > 0 ? o.max_steps
                                              : static_cast<int64_t>(std::ceil(o.num_train_epochs * steps_per_epoch));
  const int64_t logging_steps = steps_option(o.logging_steps, total_steps);
  const int64_t save_steps = steps_option(o.save_steps, total_steps);

  // ---- where to start: a checkpoint (--resume_from_checkpoint DIR | latest) or the model directory
  std::string resume_dir = o.resume_from_checkpoint;
  if (resume_dir == "latest") {
    resume_dir = find_latest_checkpoint(o.output_dir);
    if (resume_dir.empty() && main_rank) std::cerr << "resume_from_checkpoint latest: no checkpoint in " << o.output_dir << ", starting fresh\n";
  }
  if (!resume_dir.empty() && !fs::exists(fs::path(resume_dir) / "trainer_state.json"))
    throw Error(resume_dir + ": not a complete checkpoint (no trainer_state.json)");
  if (resume_dir.empty() && main_rank && !list_checkpoints(o.output_dir).empty())
    std::cerr << "warning: " << o.output_dir << " already holds checkpoints (newest: "
              << find_latest_checkpoint(o.output_dir) << ") of another run; this run starts fresh and its checkpoints "
              << "will sit beside them. To continue that run: --resume_from_checkpoint latest\n";

  // ---- model: weights in the compute dtype (bf16 with fp32 masters in the optimizer), stage, LoRA
  LoadOptions lo;
  lo.dtype = o.bf16 ? torch::kBFloat16 : torch::kFloat32;
  lo.device = device;
  lo.seed = static_cast<uint64_t>(o.seed);
  if (resume_dir.empty()) {
    lo.vision_tower = o.vision_tower;
    lo.pretrain_mm_mlp_adapter = o.pretrain_mm_mlp_adapter;
    if (o.set_keys.count("mm_projector_type")) lo.mm_projector_type = o.mm_projector_type;
    if (o.set_keys.count("mm_vision_select_layer")) lo.mm_vision_select_layer = o.mm_vision_select_layer;
    if (o.set_keys.count("mm_vision_select_feature")) lo.mm_vision_select_feature = o.mm_vision_select_feature;
  }
  LoadedLlava loaded = load_llava(resume_dir.empty() ? o.model_name_or_path : resume_dir, lo);
  for (const auto& note : loaded.notes) std::cerr << "model: " << note << "\n";
  LlavaForCausalLM model = loaded.model;
  std::unique_ptr<Lora> lora;  // declared after the model: destroyed first
  if (o.lora_enable) {
    lora = std::make_unique<Lora>(*model, LoraOptions{o.lora_r, o.lora_alpha, o.lora_dropout});
    if (!resume_dir.empty()) lora->load_adapter(resume_dir);
  }
  const std::string stage = set_trainable(*model, o);
  model->set_gradient_checkpointing(o.gradient_checkpointing);
  model->train();
  if (hooks.on_model_ready) hooks.on_model_ready(*model);

  // ---- optimizer: AdamW over the trainable tensors; no decay on biases and norms; projector lr
  // Multi-process runs and --zero_stage 1/2 use dist::ZeroOptimizer (the same AdamW with fp32 masters, state
  // sharded over the ranks, gradients reduced in buckets during backward); one process with stage 0 keeps
  // `optimizer` (the fixture trajectories are pinned on it), which then holds no tensors otherwise.
  const bool use_zero = pg || o.zero_stage != 0;
  AdamW optimizer({o.adam_beta1, o.adam_beta2, o.adam_epsilon});
  const double projector_lr = o.mm_projector_lr > 0 ? o.mm_projector_lr : o.learning_rate;
  int64_t trainable_numel = 0;
  for (auto& item : model->named_parameters()) {
    if (!item.value().requires_grad()) continue;
    trainable_numel += item.value().numel();
    const bool projector = starts_with(item.key(), "multi_modal_projector.");
    if (!use_zero)
      optimizer.add_param(item.key(), item.value(), projector ? projector_lr : o.learning_rate,
                          is_no_decay_parameter(item.key()) ? 0.0 : o.weight_decay);
  }
  if (trainable_numel == 0) throw Error("nothing to train: every parameter is frozen by the stage flags");
  // ZeRO groups: decay / no decay x LLM / projector.
  std::unique_ptr<dist::ZeroOptimizer> zopt;
  const std::vector<double> group_base_lr = {o.learning_rate, o.learning_rate, projector_lr, projector_lr};
  if (use_zero) {
    std::vector<torch::Tensor> params;
    std::vector<int> group_of_param;
    for (auto& item : model->named_parameters()) {
      if (!item.value().requires_grad()) continue;
      const bool projector = starts_with(item.key(), "multi_modal_projector.");
      params.push_back(item.value());
      group_of_param.push_back((projector ? 2 : 0) + (is_no_decay_parameter(item.key()) ? 1 : 0));
    }
    if (pg) dist::broadcast_parameters(*pg, params);  // rank 0's weights everywhere, before the masters are made
    std::vector<dist::ParamGroup> groups;
    for (size_t g = 0; g < group_base_lr.size(); ++g) groups.push_back({group_base_lr[g], g % 2 ? 0.0 : o.weight_decay});
    zopt = std::make_unique<dist::ZeroOptimizer>(pg, params, group_of_param, groups,
                                                 dist::AdamWConfig{o.adam_beta1, o.adam_beta2, o.adam_epsilon},
                                                 o.zero_stage, static_cast<size_t>(o.ddp_bucket_cap_mb) << 20);
  }
  const Schedule schedule(o.lr_scheduler_type, total_steps,
                          warmup_steps_for(o.warmup_steps, o.warmup_ratio, total_steps));

  // ---- trainer state: fresh, or everything the checkpoint recorded
  TrainerState state;
  state.max_steps = total_steps;
  state.num_train_epochs = o.max_steps > 0 ? std::ceil(static_cast<double>(total_steps) / steps_per_epoch)
                                           : o.num_train_epochs;
  state.logging_steps = logging_steps;
  state.save_steps = save_steps;
  state.train_batch_size = o.per_device_train_batch_size;
  const json run_settings = {{"per_device_train_batch_size", o.per_device_train_batch_size},
                             {"gradient_accumulation_steps", o.gradient_accumulation_steps},
                             {"world_size", world},
                             {"seed", o.seed},
                             {"shuffle", o.shuffle},
                             {"group_by_modality_length", o.group_by_modality_length},
                             {"group_by_length_window", o.group_by_length_window},
                             {"num_samples", dataset.size()},
                             {"stage", stage}};
  if (!resume_dir.empty()) {
    TrainerState saved = TrainerState::read((fs::path(resume_dir) / "trainer_state.json").string());
    for (const auto& [key, value] : run_settings.items())
      if (main_rank && saved.run.contains(key) && saved.run[key] != value)
        std::cerr << "warning: resuming with " << key << " = " << value.dump() << " but the checkpoint used "
                  << saved.run[key].dump() << ": the data order or the update differs from the interrupted run\n";
    saved.max_steps = state.max_steps;
    saved.num_train_epochs = state.num_train_epochs;
    saved.logging_steps = state.logging_steps;
    saved.save_steps = state.save_steps;
    saved.train_batch_size = state.train_batch_size;
    state = saved;
    const int64_t saved_shards = saved_zero_shards(resume_dir);
    if (zopt) {
      // ZeRO state: one file per shard. load_state re-shards for any world size (each rank reads its own file
      // first, the others only if needed), so the optimizer state resumes exactly on another world size too;
      // but next_batch counts this rank's micro-batches, so with another world size the data position and
      // order differ from the interrupted run (the world_size warning above says so).
      if (saved_shards == 0)
        throw Error(resume_dir + ": the optimizer state was written by a single-process --zero_stage 0 run "
                    "(optimizer.*.safetensors); resume it with one process and --zero_stage 0");
      zopt->load_state(saved_shards, [&](int64_t k) { return read_zero_shard(zero_shard_file(resume_dir, k, saved_shards)); });
    } else {
      if (saved_shards > 0)
        throw Error(resume_dir + ": the optimizer state is ZeRO shards (zero_shard_*_of_" + std::to_string(saved_shards) +
                    ") of a multi-process or --zero_stage 1/2 run; resume it with --zero_stage 1 or 2, or several processes");
      optimizer.load(resume_dir);
    }
    load_rng_state(resume_dir);
    if (main_rank) std::cerr << "resumed from " << resume_dir << " at step " << state.global_step << " (epoch " << state.next_epoch
              << ", batch " << state.next_batch << " of " << batches_per_epoch << ")\n";
  }
  state.run = run_settings;

  if (main_rank) std::cerr << "***** Running training *****\n"
            << "  Num examples = " << dataset.size() << "\n"
            << "  Num Epochs = " << state.num_train_epochs << "\n"
            << "  Instantaneous batch size per device = " << o.per_device_train_batch_size << "\n"
            << "  Total train batch size (w. parallel, distributed & accumulation) = "
            << o.per_device_train_batch_size * accum * world << "\n"
            << "  Gradient Accumulation steps = " << accum << "\n"
            << "  Total optimization steps = " << total_steps << "\n"
            << "  Stage = " << stage << "\n"
            << "  Number of trainable parameters = " << trainable_numel
            << (lora ? " (LoRA adapters: " + std::to_string(lora->numel()) + ")" : std::string()) << "\n"
            << "  Precision = " << (o.bf16 ? "bf16 compute, fp32 master weights and optimizer state" : "fp32")
            << ", device " << device.str() << (o.gradient_checkpointing ? ", gradient checkpointing" : "") << "\n"
            << std::flush;

  LoaderOptions loader_options;
  loader_options.num_workers = o.dataloader_num_workers;
  loader_options.fail_on_bad_sample = o.on_bad_sample == "fail";
  loader_options.pad_id = data->tokenizer.pad_id();
  BatchStream stream(*data, sampler, loader_options, state.next_epoch, state.next_batch);
  SampleProblems problems;
  MetricsWriter metrics;
  if (main_rank) metrics.open((fs::path(o.output_dir) / "metrics.jsonl").string(), resume_dir.empty() ? -1 : state.global_step);
  std::optional<Progress> progress_bar;  // rank 0 only
  if (main_rank) progress_bar.emplace(total_steps, state.global_step, ::isatty(STDERR_FILENO) != 0);
  struct {
    std::optional<Progress>* p;
    void update(int64_t n) { if (*p) (*p)->update(n); }
    void print_line(const std::string& l) { if (*p) (*p)->print_line(l); }
    void close() { if (*p) (*p)->close(); }
  } progress{&progress_bar};
  auto step_count = [&]() { return zopt ? zopt->step_count() : optimizer.step_count(); };
  StopSignals stop_signals;
  TrainResult result;
  const int64_t first_step = state.global_step;
  const double log_projector_lr = o.mm_projector_lr > 0 ? o.mm_projector_lr : -1.0;

  // Saves checkpoint-<global_step>: the model (LoRA: base + adapter files), optimizer, RNG, trainer state.
  // Several processes (collective): rank 0 writes everything into checkpoint-N.tmp; the other ranks that own a
  // ZeRO shard write theirs into the same directory between two barriers; rank 0 then adds trainer_state.json
  // and renames it; a last barrier keeps everyone at the same point.
  auto save_checkpoint = [&]() -> std::string {
    if (!main_rank) {
      fs::path tmp = fs::path(o.output_dir) / checkpoint_dir_name(state.global_step);
      tmp += ".tmp";
      pg->barrier();  // rank 0 has created tmp
      if (rank < zopt->num_shards()) save_zero_shard(zopt->state(), tmp.string());
      pg->barrier();  // every shard is written
      pg->barrier();  // rank 0 has renamed it
      const std::string dir = (fs::path(o.output_dir) / checkpoint_dir_name(state.global_step)).string();
      result.last_checkpoint = dir;
      return dir;
    }
    const std::string dir = save_checkpoint_atomic(o.output_dir, state.global_step, [&](const std::string& tmp) {
      if (pg) pg->barrier();
      auto part = [&](const std::string& name) {
        if (hooks.on_checkpoint_part) hooks.on_checkpoint_part(name);
      };
      part("model");
      {
        std::optional<Lora::Detached> plain;
        if (lora) plain.emplace(*lora);
        SaveOptions sv;
        sv.atomic = false;
        sv.tokenizer_source_dir = o.model_name_or_path;
        save_hf_llava(*model, tmp, sv);
      }
      if (lora) lora->save_adapter(tmp, o.model_name_or_path);
      if (o.tune_mm_mlp_adapter) save_projector(*model, tmp + "/mm_projector.safetensors");
      part("optimizer");
      if (zopt) {
        if (zopt->num_shards() > 0) save_zero_shard(zopt->state(), tmp);
      } else {
        optimizer.save(tmp);
      }
      if (pg) pg->barrier();
      part("rng_state");
      save_rng_state(tmp);
      part("trainer_state");
      state.write(tmp + "/trainer_state.json");  // last: a checkpoint with it is complete
    });
    rotate_checkpoints(o.output_dir, o.save_total_limit);
    if (pg) pg->barrier();
    result.last_checkpoint = dir;
    return dir;
  };

  // ================================================================ the step loop
  while (state.global_step < total_steps) {
    const auto step_start = Clock::now();
    StepRecord rec;
    rec.step = state.global_step + 1;
    double data_wait = 0, loss_sum = 0, mean_of_means = 0;
    int64_t micro_batches = 0;
    std::vector<std::string> step_ids;
    // Several processes: the step's sums (loss, token and sample counts) are all-reduced once per step, on every
    // rank at the same point in the order of collectives: before the backward of the step's last micro-batch
    // (the one whose backward starts the gradient buckets' reductions), or after the micro-batches when this
    // rank has no such backward. The counts are then those of all ranks.
    bool sums_reduced = false;
    auto reduce_step_sums = [&]() {
      if (!pg || sums_reduced) return;
      sums_reduced = true;
      torch::Tensor sums = torch::tensor({loss_sum, mean_of_means, static_cast<double>(rec.num_target_tokens),
                                          static_cast<double>(micro_batches), static_cast<double>(rec.num_samples),
                                          static_cast<double>(rec.num_tokens), static_cast<double>(rec.skipped_samples)},
                                         torch::kDouble)
                               .to(pg->device());
      pg->allreduce_sum(sums);
      sums = sums.cpu();
      const auto v = [&](int i) { return sums[i].item<double>(); };
      loss_sum = v(0);
      mean_of_means = v(1);
      rec.num_target_tokens = std::llround(v(2));
      micro_batches = std::llround(v(3));
      rec.num_samples = std::llround(v(4));
      rec.num_tokens = std::llround(v(5));
      rec.skipped_samples = std::llround(v(6));
    };

    // -- micro-batches: forward, backward (gradients accumulate; fp32 buffers for bf16 weights)
    for (int64_t m = 0; m < accum; ++m) {
      const auto wait_start = Clock::now();
      Batch batch = stream.next();
      data_wait += seconds_since(wait_start);
      problems.report(batch);
      rec.skipped_samples += batch.skipped;
      rec.num_samples += batch.size();
      rec.num_tokens += batch.num_tokens;
      rec.sample_indices.insert(rec.sample_indices.end(), batch.sample_indices.begin(), batch.sample_indices.end());
      step_ids.insert(step_ids.end(), batch.sample_ids.begin(), batch.sample_ids.end());
      const bool last_micro = m == accum - 1 || stream.epoch_done();  // the same on every rank
      if (zopt) zopt->set_sync(last_micro);  // the step's last micro-batch reduces the gradients
      if (batch.size() > 0) {
        // input_ids/labels/attention_mask [B,T], pixel_values [N,3,H,W] -> summed CE over supervised tokens
        LlavaOutput out;
        try {
          out = model->forward(batch.input_ids, batch.labels, batch.attention_mask, batch.pixel_values,
                               batch.image_counts, o.model_max_length, /*return_logits=*/false);
        } catch (const Error& e) {  // inputs the model rejects: the micro-batch is skipped, never the run
          if (o.on_bad_sample == "fail") throw;
          std::cerr << "warning: step " << rec.step << ": micro-batch skipped (samples " << join_ids(batch.sample_ids)
                    << "): " << e.what() << "\n";
          rec.skipped_samples += batch.size();
          rec.num_samples -= batch.size();
          if (stream.epoch_done()) break;
          continue;
        }
        const int64_t n = out.num_target_tokens;
        // Average over the whole step's tokens (default): backward the sum now, divide by the step's token
        // count once all micro-batches are in. Otherwise each micro-batch's own mean (LLaVA-1.5 / HF 4.37).
        torch::Tensor objective = o.average_tokens_across_devices ? out.loss_sum
                                                                  : out.loss_sum / static_cast<double>(std::max<int64_t>(n, 1));
        const double ls = out.loss_sum.item<double>();
        loss_sum += ls;
        mean_of_means += n > 0 ? ls / static_cast<double>(n) : 0.0;
        rec.num_target_tokens += n;
        ++micro_batches;
        if (last_micro) reduce_step_sums();
        if (objective.requires_grad()) objective.backward();
        if (!zopt) optimizer.accumulate_grads();
      }
      if (stream.epoch_done()) break;  // the epoch's last micro-batch ends the step
    }
    state.skipped_samples += rec.skipped_samples;

    reduce_step_sums();  // (if this rank had no backward on the last micro-batch)

    // -- the step's loss and gradient normalisation (over all ranks)
    const bool by_tokens = o.average_tokens_across_devices;
    // by tokens: every rank backwarded its summed CE, divided here by the step's tokens on all ranks; otherwise
    // each micro-batch's mean, averaged over the step's micro-batches on all ranks (micro_batches x world).
    const double divisor = by_tokens ? static_cast<double>(rec.num_target_tokens) : static_cast<double>(micro_batches);
    rec.loss = rec.num_target_tokens == 0 ? std::numeric_limits<double>::quiet_NaN()
               : by_tokens               ? loss_sum / divisor
                                         : mean_of_means / divisor;
    std::vector<torch::Tensor> grads;
    if (zopt) {
      zopt->finish_gradients(divisor > 0 ? 1.0 / divisor : 1.0);  // waits for every reduction
      // the global norm before clipping (identical on every rank, so is the NaN guard's decision); clipping
      // is applied by the optimizer's step when it is needed
      rec.grad_norm = zopt->clip_grad_norm(o.max_grad_norm);
    } else {
      grads = optimizer.grads();
      if (divisor > 0) scale_grads(grads, 1.0 / divisor);
      rec.grad_norm = global_grad_norm(grads);  // before clipping, as logged by HF
    }
    // The schedule follows the updates actually made (HF: the scheduler does not step when the update is skipped).
    const double lr_multiplier = schedule.lr_multiplier(step_count());
    rec.learning_rate = o.learning_rate * lr_multiplier;

    // -- NaN guard, clipping, update
    const bool finite = std::isfinite(rec.loss) && std::isfinite(rec.grad_norm);
    if (rec.num_target_tokens == 0) {
      rec.update_skipped = true;
      if (main_rank || !pg) std::cerr << "warning: step " << rec.step << ": no supervised token in the step (samples: "
                << join_ids(step_ids) << "); no update\n";
    } else if (!finite) {
      rec.update_skipped = true;
      ++state.consecutive_bad_steps;
      if (main_rank) std::cerr << "warning: step " << rec.step << ": non-finite loss (" << py_repr(rec.loss) << ") or grad_norm ("
                << py_repr(rec.grad_norm) << "); update skipped (" << state.consecutive_bad_steps << " in a row of at most "
                << o.max_bad_steps << "); samples: " << join_ids(step_ids) << "\n";
    } else {
      state.consecutive_bad_steps = 0;
      if (zopt) {
        for (size_t g = 0; g < group_base_lr.size(); ++g) zopt->set_lr(g, group_base_lr[g] * lr_multiplier);
        zopt->step();
      } else {
        if (o.max_grad_norm > 0) {
          const double clip_coef = o.max_grad_norm / (rec.grad_norm + 1e-6);  // torch.nn.utils.clip_grad_norm_
          if (clip_coef < 1.0) scale_grads(grads, clip_coef);
        }
        optimizer.step(lr_multiplier);
      }
    }
    if (zopt) zopt->zero_grad();
    else optimizer.zero_grad();
    grads.clear();

    // -- bookkeeping: position, epoch, loss sums
    ++state.global_step;
    state.next_epoch = stream.epoch_done() ? stream.epoch() + 1 : stream.epoch();
    state.next_batch = stream.epoch_done() ? 0 : stream.batch();
    state.epoch = stream.epoch() + static_cast<double>(stream.batch()) / static_cast<double>(stream.per_epoch());
    rec.epoch = state.epoch;
    if (std::isfinite(rec.loss)) {  // HF's logging_nan_inf_filter: bad steps do not enter the averages
      state.loss_total += rec.loss;
      ++state.loss_steps;
      state.window_loss += rec.loss;
      ++state.window_steps;
    }
    rec.step_time_s = seconds_since(step_start);
    rec.data_wait_s = data_wait;

    // -- logs: metrics.jsonl every step; HF's dict every logging_steps (lr after the scheduler step, as HF)
    if (main_rank) metrics.write(step_json(rec, log_projector_lr >= 0 ? log_projector_lr * lr_multiplier : -1.0).dump());
    progress.update(state.global_step);
    if (logging_steps > 0 && state.global_step % logging_steps == 0) {
      LogDict d;
      d.add("loss", state.window_steps ? py_round(state.window_loss / state.window_steps, 4)
                                       : std::numeric_limits<double>::quiet_NaN());
      d.add("grad_norm", rec.grad_norm);
      d.add("learning_rate", o.learning_rate * schedule.lr_multiplier(step_count()));
      d.add("epoch", py_round(state.epoch, 2));
      progress.print_line(d.to_python());
      json entry = json::object();
      for (const auto& [k, v] : d.items()) entry[k] = std::get<double>(v);
      entry["step"] = state.global_step;
      state.log_history.push_back(entry);
      state.window_loss = 0;
      state.window_steps = 0;
    }
    if (hooks.on_step) hooks.on_step(rec);
    result.steps.push_back(rec);

    if (state.consecutive_bad_steps >= o.max_bad_steps) {
      progress.close();
      result.exit_code = 1;
      result.global_step = state.global_step;
      result.message = "stopped at step " + std::to_string(state.global_step) + ": " +
                       std::to_string(state.consecutive_bad_steps) +
                       " steps in a row had a non-finite loss or gradient (--max_bad_steps " +
                       std::to_string(o.max_bad_steps) + "); last samples: " + join_ids(step_ids) +
                       (result.last_checkpoint.empty() ? std::string()
                                                       : "; last checkpoint: " + result.last_checkpoint);
      return result;
    }
    // -- checkpoints: every save_steps, and when a signal asked us to stop
    bool saved_now = false;
    // A signal reaches one rank or some: the decision to stop is taken by all together.
    bool stop_now = g_stop_requested.load();
    if (pg) stop_now = pg->allreduce_scalar(stop_now ? 1.0 : 0.0) > 0.5;
    if (save_steps > 0 && state.global_step % save_steps == 0 && state.global_step < total_steps) {
      save_checkpoint();
      saved_now = true;
    }
    if (stop_now) {
      const std::string dir = saved_now ? result.last_checkpoint : save_checkpoint();
      progress.close();
      result.exit_code = 2;
      result.global_step = state.global_step;
      result.message = "interrupted at step " + std::to_string(state.global_step) + " of " +
                       std::to_string(total_steps) + "; checkpoint saved to " + dir +
                       "\nresume with the same command plus --resume_from_checkpoint " + dir +
                       " (or --resume_from_checkpoint latest)";
      return result;
    }
  }
  progress.close();

  // ================================================================ the end: final model and summary
  if (lora) {
    // The adapters alone (PEFT layout) in a subdirectory, then folded in: the saved model is a plain LLaVA model.
    const fs::path dir = fs::path(o.output_dir) / "lora_adapter", tmp = fs::path(o.output_dir) / "lora_adapter.tmp";
    if (main_rank) {
      llava::remove_tree(tmp);
      fs::create_directories(tmp);
      lora->save_adapter(tmp.string(), o.model_name_or_path);
      llava::remove_tree(dir);
      fs::rename(tmp, dir);
    }
    lora->merge();
  }
  if (main_rank) {
    save_final_model(*model, o);
    if (o.tune_mm_mlp_adapter)
      save_projector(*model, (fs::path(o.output_dir) / "mm_projector.safetensors").string());
  }

  const double runtime = seconds_since(run_start);
  const int64_t steps_run = state.global_step - first_step;
  const double train_loss = state.loss_steps ? state.loss_total / state.loss_steps : 0.0;
  LogDict summary;
  summary.add("train_runtime", py_round(runtime, 4));
  int64_t samples_run = 0;  // samples actually trained on by all ranks (HF estimates steps x batch)
  for (const auto& s : result.steps) samples_run += s.num_samples;
  summary.add("train_samples_per_second", py_round(static_cast<double>(samples_run) / runtime, 3));
  summary.add("train_steps_per_second", py_round(static_cast<double>(steps_run) / runtime, 3));
  summary.add("train_loss", train_loss);
  summary.add("epoch", py_round(state.epoch, 2));
  json entry = json::object();
  for (const auto& [k, v] : summary.items()) entry[k] = std::get<double>(v);
  entry["step"] = state.global_step;
  entry["total_flos"] = 0;
  state.log_history.push_back(entry);
  if (main_rank) {
    std::cout << summary.to_python() << "\n" << std::flush;
    state.write((fs::path(o.output_dir) / "trainer_state.json").string());
  }
  if (pg) pg->barrier();  // the other ranks end once the model is written

  result.global_step = state.global_step;
  result.train_loss = train_loss;
  if (main_rank)
    std::cerr << "saved the final model to " << o.output_dir
              << (o.tune_mm_mlp_adapter ? " (projector: mm_projector.safetensors)" : "") << "\n";
  return result;
}

}  // namespace llava
