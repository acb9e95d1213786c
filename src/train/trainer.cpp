// The training run: Trainer's constructor builds the components (processes, data, model and stage,
// optimizer and schedule, resume state, logs); train() is the loop; train_step() is one optimizer step,
// readable top to bottom between its banners. LLaVA's train.py + HF Trainer (4.37, with the 4.46+ token-count
// loss normalisation) are the reference; README item 10 of the llava-tiny fixture pins the numbers.
#include "llava/train/trainer.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>
#include <optional>

#include "llava/dist/ddp.h"
#include "llava/dist/process_group.h"
#include "llava/error.h"
#include "llava/fs_util.h"
#include "llava/model/checkpoint.h"
#include "llava/model/llava.h"
#include "llava/pipeline.h"
#include "llava/sampler.h"
#include "llava/train/batch_stream.h"
#include "llava/train/evaluate.h"
#include "llava/train/loader.h"
#include "llava/train/lora.h"
#include "llava/train/optimizer.h"
#include "llava/train/run_log.h"
#include "llava/train/schedule.h"
#include "llava/train/stage.h"
#include "llava/train/state.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::atomic<bool> g_stop_requested{false};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// HF: logging_steps/save_steps below 1 are a fraction of the run's steps.
int64_t steps_option(double value, int64_t total_steps) {
  if (value <= 0) return 0;
  if (value < 1) return static_cast<int64_t>(std::ceil(value * static_cast<double>(total_steps)));
  return static_cast<int64_t>(value);
}

std::string join_ids(const std::vector<std::string>& ids, size_t max = 8) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < max; ++i) s += (i ? ", " : "") + ids[i];
  if (ids.size() > max) s += ", ... (" + std::to_string(ids.size()) + " samples)";
  return s;
}

// Prints the first few bad samples and warnings with their ids (every rank its own); later ones are counted.
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

// Of every sample the run has met (resumed runs included), the share that was bad.
double skipped_share(const TrainerState& s) {
  const int64_t all = s.skipped_samples + s.seen_samples;
  return all > 0 ? static_cast<double>(s.skipped_samples) / static_cast<double>(all) : 0.0;
}

}  // namespace

void request_stop() { g_stop_requested.store(true); }

// The step's sums over its micro-batches (and, once reduced, over all ranks). The loss terms stay on the
// device until the step is over: one host synchronisation per step, not one per micro-batch.
struct StepSums {
  torch::Tensor loss_sum, mean_of_means;  // scalar fp64 on the device (summed CE; sum of micro-batch means)
  int64_t targets = 0, micro_batches = 0, samples = 0, tokens = 0, skipped = 0;
  bool reduced = false;

  void add(const torch::Tensor& micro_loss_sum, int64_t n) {
    torch::Tensor l = micro_loss_sum.detach().to(torch::kDouble);
    torch::Tensor mean = n > 0 ? l / static_cast<double>(n) : l * 0.0;
    loss_sum = loss_sum.defined() ? loss_sum + l : l;
    mean_of_means = mean_of_means.defined() ? mean_of_means + mean : mean;
    targets += n;
    ++micro_batches;
  }
  // Several processes: summed over ranks once per step, on every rank at the same point in the order of
  // collectives (before the backward of the step's last micro-batch, whose buckets are the next collectives,
  // or after the micro-batches when this rank has no such backward). Then the counts are everyone's.
  void reduce(dist::ProcessGroup* pg, const torch::Device& device) {
    if (!pg || reduced) return;
    reduced = true;
    const auto dopt = torch::TensorOptions().dtype(torch::kDouble).device(pg->device());
    torch::Tensor counts = torch::tensor({static_cast<double>(targets), static_cast<double>(micro_batches),
                                          static_cast<double>(samples), static_cast<double>(tokens),
                                          static_cast<double>(skipped)}, torch::kDouble);
    torch::Tensor losses = torch::stack({loss_sum.defined() ? loss_sum.to(dopt) : torch::zeros({}, dopt),
                                         mean_of_means.defined() ? mean_of_means.to(dopt) : torch::zeros({}, dopt)});
    torch::Tensor all = torch::cat({losses, counts.to(pg->device())});
    pg->allreduce_sum(all);
    all = all.cpu();
    auto v = [&](int i) { return all[i].item<double>(); };
    loss_sum = torch::full({}, v(0), torch::TensorOptions().dtype(torch::kDouble).device(device));
    mean_of_means = torch::full({}, v(1), torch::TensorOptions().dtype(torch::kDouble).device(device));
    targets = std::llround(v(2));
    micro_batches = std::llround(v(3));
    samples = std::llround(v(4));
    tokens = std::llround(v(5));
    skipped = std::llround(v(6));
  }
};

// ------------------------------------------------------------------------------------------ the components

struct Trainer::Parts {
  std::shared_ptr<dist::ProcessGroup> pg;  // null: one process
  int rank = 0, world = 1;
  bool main_rank = true;  // writes logs, metrics, checkpoints and the model
  torch::Device device = torch::kCPU;

  std::unique_ptr<DataPipeline> data;
  std::unique_ptr<Sampler> sampler;
  std::optional<Dataset> eval_data;  // --eval_data_path (rank 0 evaluates)
  int64_t steps_per_epoch = 0, total_steps = 0, logging_steps = 0, save_steps = 0, eval_steps = 0;

  LlavaForCausalLM model{nullptr};
  std::string stage;
  std::unique_ptr<Optimizer> optimizer;
  std::unique_ptr<Schedule> schedule;

  std::string resume_dir;
  TrainerState state;
  int64_t first_step = 0;
  std::unique_ptr<BatchStream> stream;
  SampleProblems problems;
  std::unique_ptr<RunLog> log;
  Clock::time_point start;
};

namespace {

// The run settings whose change would alter the data order or the update; a resume warns when they differ.
json run_settings(const TrainConfig& c, int world, size_t num_samples, const std::string& stage) {
  return {{"per_device_train_batch_size", c.loop.per_device_train_batch_size},
          {"gradient_accumulation_steps", c.loop.gradient_accumulation_steps},
          {"world_size", world},
          {"seed", c.loop.seed},
          {"shuffle", c.loop.shuffle},
          {"group_by_modality_length", c.loop.group_by_modality_length},
          {"group_by_length_window", c.loop.group_by_length_window},
          {"num_samples", num_samples},
          {"stage", stage}};
}

// Before the first step: a data set in which no sample can be used is an error, not a run that "trains" on
// nothing. Samples are tried in file order until one builds (usually the first).
void require_a_usable_sample(const DataPipeline& data, const std::string& path) {
  std::vector<std::string> reasons;
  const int64_t n = static_cast<int64_t>(data.dataset->size());
  for (int64_t i = 0; i < n; ++i) {
    Batch b = build_batch(*data.dataset, data.example, {i}, 0);
    if (b.size() > 0) return;
    if (reasons.size() < 3 && !b.errors.empty()) reasons.push_back(b.errors[0]);
  }
  std::string first;
  for (const auto& r : reasons) first += "\n  " + r;
  throw Error(path + ": no usable sample: all " + std::to_string(n) + " samples are bad; the first:" + first);
}

}  // namespace

Trainer::Trainer(TrainConfig config, TrainHooks hooks)
    : config_(std::move(config)), hooks_(std::move(hooks)), parts_(std::make_unique<Parts>()) {
  parts_->start = Clock::now();
  g_stop_requested.store(false);
  start_processes();
  build_data();
  find_resume_point();
  build_model();
  build_optimizer();
  restore_state();
  print_start();
  Parts& p = *parts_;
  LoaderOptions loader;
  loader.num_workers = config_.loop.dataloader_num_workers;
  loader.fail_on_bad_sample = config_.loop.fail_on_bad_sample;
  loader.pad_id = p.data->tokenizer.pad_id();
  p.stream = std::make_unique<BatchStream>(*p.data, *p.sampler, loader, p.state.next_epoch, p.state.next_batch);
  p.log = std::make_unique<RunLog>(p.main_rank, config_.checkpoint.output_dir, config_.log, p.total_steps,
                                   p.state.global_step, p.resume_dir.empty() ? -1 : p.state.global_step, p.state.run);
}

// Processes: torchrun/SLURM variables -> a process group (Gloo on cpu, NCCL on cuda); none for one process.
// The device is this rank's (the same DistEnv the group uses).
void Trainer::start_processes() {
  Parts& p = *parts_;
  const TrainConfig& c = config_;
  const dist::DistEnv env = dist::DistEnv::from_environment();
  p.device = dist::resolve_device(c.dist.device, env);
  if (env.distributed()) {
    std::cerr << "distributed: " << env.describe() << ", zero_stage " << c.dist.zero_stage << "\n";
    p.pg = dist::ProcessGroup::create(env, dist::resolve_backend(c.dist.ddp_backend, p.device.str()),
                                      std::chrono::seconds(c.dist.ddp_timeout_s));
  }
  p.rank = p.pg ? p.pg->rank() : 0;
  p.world = p.pg ? p.pg->world_size() : 1;
  p.main_rank = p.rank == 0;
  if (p.main_rank) {
    fs::create_directories(c.checkpoint.output_dir);
    remove_partial_checkpoints(c.checkpoint.output_dir);
  }
  if (p.pg) p.pg->barrier();
  torch::manual_seed(c.loop.seed);
  if (p.device.is_cuda()) {
    at::globalContext().setAllowTF32CuBLAS(c.tf32);
    at::globalContext().setAllowTF32CuDNN(c.tf32);
  }
}

// Data: tokenizer, template, image preprocessing, dataset index; the sampler fixes every epoch's order; the
// run's length in optimizer steps.
void Trainer::build_data() {
  Parts& p = *parts_;
  const TrainConfig& c = config_;
  // Rank 0 indexes the data files and writes their index caches; the other ranks wait for it, then map
  // those caches (one scan per run, one copy of the index in the page cache of a node).
  DatasetOpenOptions open = dataset_open_options(c.data);
  if (p.pg && !p.main_rank) {
    p.pg->barrier();
    open.build_cache = false;
  }
  p.data = make_data_pipeline(c.data, /*needs_dataset=*/true, &open);
  if (p.pg && p.main_rank) p.pg->barrier();
  const Dataset& dataset = *p.data->dataset;
  if (dataset.size() == 0) throw Error(c.data.data_path + ": no samples");
  std::vector<int32_t> modality_lengths(dataset.size());
  for (size_t i = 0; i < dataset.size(); ++i) modality_lengths[i] = dataset.modality_length(i);
  // --group_by_length_window sorts by an estimate of the sequence's real length: LLaVA's word count plus the
  // positions its images take (a 2-4-image sample is long even with few words; anyres: up to 2,928 each).
  std::vector<int32_t> sort_lengths;
  if (c.loop.group_by_length_window > 0) {
    sort_lengths.resize(dataset.size());
    for (size_t i = 0; i < dataset.size(); ++i)
      sort_lengths[i] = static_cast<int32_t>(std::min<int64_t>(
          std::numeric_limits<int32_t>::max(),
          std::abs(modality_lengths[i]) + estimated_image_positions(dataset.image_count(i), p.data->example)));
  }
  dataset.release_index_pages();  // the sampler keeps its own copy of the lengths
  SamplerOptions so;
  so.seed = c.loop.seed;
  so.shuffle = c.loop.shuffle;
  so.group_by_modality_length = c.loop.group_by_modality_length;
  so.group_by_length_window = c.loop.group_by_length_window;
  so.batch_size = c.loop.per_device_train_batch_size;
  so.gradient_accumulation_steps = c.loop.gradient_accumulation_steps;
  so.world_size = p.world;
  so.rank = p.rank;
  so.drop_last = c.loop.dataloader_drop_last;
  p.sampler = std::make_unique<Sampler>(std::move(modality_lengths), so, std::move(sort_lengths));
  require_a_usable_sample(*p.data, c.data.data_path);
  // An optimizer step every `accum` micro-batches and at the end of each epoch (transformers >= 4.46).
  const int64_t accum = c.loop.gradient_accumulation_steps;
  p.steps_per_epoch = (p.sampler->batches_per_epoch() + accum - 1) / accum;
  p.total_steps = c.loop.max_steps > 0 ? c.loop.max_steps
                                       : static_cast<int64_t>(std::ceil(c.loop.num_train_epochs * p.steps_per_epoch));
  p.logging_steps = steps_option(c.log.logging_steps, p.total_steps);
  p.save_steps = steps_option(c.checkpoint.save_steps, p.total_steps);
  if (c.eval.strategy == "no") return;
  // HF: eval_steps defaults to logging_steps
  p.eval_steps = steps_option(c.eval.steps > 0 ? c.eval.steps : c.log.logging_steps, p.total_steps);
  if (c.eval.strategy == "steps" && p.eval_steps == 0)
    throw Error("--evaluation_strategy steps needs --eval_steps > 0 (or --logging_steps > 0)");
  if (p.main_rank) p.eval_data.emplace(Dataset::open(c.eval.data_path, c.data.image_folder, dataset_open_options(c.data)));
  if (p.eval_data && p.eval_data->size() == 0) throw Error(c.eval.data_path + ": no samples");
}

// Where to start: a checkpoint (--resume_from_checkpoint DIR | latest) or the model directory.
void Trainer::find_resume_point() {
  Parts& p = *parts_;
  const std::string& out = config_.checkpoint.output_dir;
  p.resume_dir = config_.checkpoint.resume_from_checkpoint;
  if (p.resume_dir == "latest") {
    p.resume_dir = find_latest_checkpoint(out);
    if (p.resume_dir.empty() && p.main_rank) std::cerr << "resume_from_checkpoint latest: no checkpoint in " << out << ", starting fresh\n";
  }
  if (!p.resume_dir.empty() && !fs::exists(fs::path(p.resume_dir) / "trainer_state.json"))
    throw Error(p.resume_dir + ": not a complete checkpoint (no trainer_state.json)");
  if (p.resume_dir.empty() && p.main_rank && !list_checkpoints(out).empty())
    std::cerr << "warning: " << out << " already holds checkpoints (newest: " << find_latest_checkpoint(out)
              << ") of another run; this run starts fresh and its checkpoints will sit beside them. To continue "
              << "that run: --resume_from_checkpoint latest\n";
}

// The model: weights in the compute dtype (bf16 with fp32 masters in the optimizer), LoRA, what trains.
void Trainer::build_model() {
  Parts& p = *parts_;
  const TrainConfig& c = config_;
  LoadOptions lo = c.load;
  if (!p.resume_dir.empty()) {  // a checkpoint is a complete model directory: none of the assembly options
    lo = LoadOptions();
    lo.dtype = c.load.dtype;
    lo.seed = c.load.seed;
    lo.fused_attention = c.load.fused_attention;
  }
  lo.device = p.device;
  LoadedLlava loaded = load_llava(p.resume_dir.empty() ? c.model_dir : p.resume_dir, lo);
  p.model = loaded.model;
  // the data side's image layout (anyres tiling, merge type) is the model's, as LLaVA's train() sets it
  for (const auto& note : p.model->configure_images(p.data->example.anyres, image_aspect_ratio_name(p.data->example),
                                                    c.load.seed))
    loaded.notes.push_back(note);
  for (const auto& note : loaded.notes) std::cerr << "model: " << note << "\n";
  if (c.lora_enable) {
    install_lora(*p.model, c.lora);
    if (!p.resume_dir.empty()) load_lora_adapter(*p.model, p.resume_dir);
  }
  p.stage = apply_stage(*p.model, c.stage);
  p.model->set_gradient_checkpointing(c.loop.gradient_checkpointing);
  p.model->train();
  if (hooks_.on_model_ready) hooks_.on_model_ready(*p.model);
}

// AdamW over the trainable tensors in LLaVA's parameter groups (every rank starts from rank 0's weights);
// the schedule.
void Trainer::build_optimizer() {
  Parts& p = *parts_;
  const TrainConfig& c = config_;
  std::vector<NamedParameter> trainable;
  for (auto& item : p.model->named_parameters())
    if (item.value().requires_grad()) trainable.push_back({item.key(), item.value()});
  if (trainable.empty()) throw Error("nothing to train: every parameter is frozen by the stage flags");
  if (p.pg) {  // before the optimizer copies its masters
    std::vector<torch::Tensor> tensors;
    for (const auto& t : trainable) tensors.push_back(t.tensor);
    dist::broadcast_parameters(*p.pg, tensors);
  }
  p.optimizer = std::make_unique<Optimizer>(std::move(trainable), c.optimizer, p.pg);
  p.schedule = std::make_unique<Schedule>(c.schedule.type, p.total_steps,
                                          warmup_steps_for(c.schedule.warmup_steps, c.schedule.warmup_ratio, p.total_steps));
}

// The trainer state: fresh, or everything the checkpoint recorded (position, loss sums, log history, the
// optimizer's state and the random generators).
void Trainer::restore_state() {
  Parts& p = *parts_;
  const TrainConfig& c = config_;
  TrainerState& state = p.state;
  state.max_steps = p.total_steps;
  state.num_train_epochs = c.loop.max_steps > 0 ? std::ceil(static_cast<double>(p.total_steps) / p.steps_per_epoch)
                                                : c.loop.num_train_epochs;
  state.logging_steps = p.logging_steps;
  state.save_steps = p.save_steps;
  state.train_batch_size = c.loop.per_device_train_batch_size;
  const json settings = run_settings(c, p.world, p.data->dataset->size(), p.stage);
  if (!p.resume_dir.empty()) {
    TrainerState saved = TrainerState::read((fs::path(p.resume_dir) / "trainer_state.json").string());
    for (const auto& [key, value] : settings.items())
      if (p.main_rank && saved.run.contains(key) && saved.run[key] != value)
        std::cerr << "warning: resuming with " << key << " = " << value.dump() << " but the checkpoint used "
                  << saved.run[key].dump() << ": the data order or the update differs from the interrupted run\n";
    saved.max_steps = state.max_steps;
    saved.num_train_epochs = state.num_train_epochs;
    saved.logging_steps = state.logging_steps;
    saved.save_steps = state.save_steps;
    saved.train_batch_size = state.train_batch_size;
    state = saved;
    // Any world size and ZeRO stage resumes the optimizer exactly; but next_batch counts this rank's
    // micro-batches, so with another world size the data position and order differ (the warning above).
    load_optimizer_state(*p.optimizer, p.resume_dir);
    load_rng_state(p.resume_dir, p.rank);
    if (p.main_rank)
      std::cerr << "resumed from " << p.resume_dir << " at step " << state.global_step << " (epoch " << state.next_epoch
                << ", batch " << state.next_batch << " of " << p.sampler->batches_per_epoch() << ")\n";
  }
  state.run = settings;
  p.first_step = state.global_step;
}

// HF Trainer's start-up banner (rank 0).
void Trainer::print_start() const {
  const Parts& p = *parts_;
  const TrainConfig& c = config_;
  if (!p.main_rank) return;
  const int64_t accum = c.loop.gradient_accumulation_steps;
  std::cerr << "***** Running training *****\n"
            << "  Num examples = " << p.data->dataset->size() << "\n"
            << "  Num Epochs = " << p.state.num_train_epochs << "\n"
            << "  Instantaneous batch size per device = " << c.loop.per_device_train_batch_size << "\n"
            << "  Total train batch size (w. parallel, distributed & accumulation) = "
            << c.loop.per_device_train_batch_size * accum * p.world << "\n"
            << "  Gradient Accumulation steps = " << accum << "\n"
            << "  Total optimization steps = " << p.total_steps << "\n"
            << "  Run name = " << c.log.run_name << "\n"
            << "  Stage = " << p.stage << "\n"
            << "  Number of trainable parameters = " << p.optimizer->trainable_numel()
            << (c.lora_enable ? " (LoRA adapters: " + std::to_string(lora_numel(*p.model)) + ")" : std::string()) << "\n"
            << "  Precision = " << (c.bf16 ? "bf16 compute, fp32 master weights and optimizer state" : "fp32")
            << ", device " << p.device.str() << (c.loop.gradient_checkpointing ? ", gradient checkpointing" : "")
            << "\n" << std::flush;
}

Trainer::~Trainer() = default;

// ------------------------------------------------------------------------------------------ the loop

TrainResult Trainer::train() {
  Parts& p = *parts_;
  TrainerState& state = p.state;
  TrainResult result;
  while (state.global_step < p.total_steps) {
    StepRecord rec = train_step();
    // HF logs the lr after the scheduler's step: the one the next update uses
    const double next_lr = config_.optimizer.learning_rate * p.schedule->lr_multiplier(p.optimizer->step_count());
    p.log->step(rec, state, p.logging_steps, next_lr);
    if (hooks_.on_step) hooks_.on_step(rec);
    result.steps.push_back(rec);

    if (state.consecutive_bad_steps >= config_.loop.max_bad_steps) {
      p.log->close();
      result.exit_code = 1;
      result.global_step = state.global_step;
      result.message = "stopped at step " + std::to_string(state.global_step) + ": " +
                       std::to_string(state.consecutive_bad_steps) +
                       " steps in a row had a non-finite loss or gradient (--max_bad_steps " +
                       std::to_string(config_.loop.max_bad_steps) + "); last samples: " + join_ids(rec.sample_ids) +
                       (result.last_checkpoint.empty() ? std::string() : "; last checkpoint: " + result.last_checkpoint);
      return result;
    }
    if (due(config_.eval.strategy, p.eval_steps)) evaluate_held_out();
    // -- checkpoints: by --save_strategy (the last step's is the final model), and when a signal asked us to
    // stop (a signal may reach some ranks only: the decision is taken by all together)
    bool stop = g_stop_requested.load();
    if (p.pg) stop = p.pg->allreduce_scalar(stop ? 1.0 : 0.0) > 0.5;
    const bool save = due(config_.checkpoint.save_strategy, p.save_steps) && state.global_step < p.total_steps;
    if (save || stop) save_checkpoint(result);
    if (stop) {
      p.log->close();
      result.exit_code = 2;
      result.global_step = state.global_step;
      result.message = "interrupted at step " + std::to_string(state.global_step) + " of " +
                       std::to_string(p.total_steps) + "; checkpoint saved to " + result.last_checkpoint +
                       "\nresume with the same command plus --resume_from_checkpoint " + result.last_checkpoint +
                       " (or --resume_from_checkpoint latest)";
      return result;
    }
  }
  p.log->close();
  save_final_model();
  report_end(result);
  return result;
}

// ------------------------------------------------------------------------------------------ the step

StepRecord Trainer::train_step() {
  Parts& p = *parts_;
  const LoopConfig& loop = config_.loop;
  TrainerState& state = p.state;
  const auto step_start = Clock::now();
  StepRecord rec;
  rec.step = state.global_step + 1;
  StepSums sums;
  double data_wait = 0;

  // ================================================================ TRAINING STEP BEGIN
  // -- micro-batches: forward, backward (gradients accumulate; summed over ranks during the last backward)
  for (int64_t m = 0; m < loop.gradient_accumulation_steps; ++m) {
    const auto wait_start = Clock::now();
    Batch batch = p.stream->next();
    data_wait += seconds_since(wait_start);
    p.problems.report(batch);
    sums.skipped += batch.skipped;
    sums.samples += batch.size();
    sums.tokens += batch.num_tokens;
    rec.sample_indices.insert(rec.sample_indices.end(), batch.sample_indices.begin(), batch.sample_indices.end());
    rec.sample_ids.insert(rec.sample_ids.end(), batch.sample_ids.begin(), batch.sample_ids.end());
    const bool last = m == loop.gradient_accumulation_steps - 1 || p.stream->epoch_done();  // the same on every rank
    forward_backward_step(batch, last, sums);
    if (p.stream->epoch_done()) break;  // the epoch's last micro-batch ends the step
  }
  sums.reduce(p.pg.get(), p.device);  // (if this rank had no backward on the last micro-batch)

  // -- the step's loss and gradient normalisation (over all ranks): by tokens, every rank backwarded its summed
  // CE, divided here by the step's supervised tokens on all ranks; otherwise each micro-batch's own mean,
  // averaged over the step's micro-batches on all ranks (LLaVA-1.5 / HF 4.37).
  const bool by_tokens = loop.average_tokens_across_devices;
  const double divisor = static_cast<double>(by_tokens ? sums.targets : sums.micro_batches);
  p.optimizer->reduce_gradients(divisor > 0 ? 1.0 / divisor : 1.0);
  const torch::Tensor loss_total = by_tokens ? sums.loss_sum : sums.mean_of_means;
  rec.loss = sums.targets == 0 || !loss_total.defined() ? std::numeric_limits<double>::quiet_NaN()
                                                        : loss_total.item<double>() / divisor;  // the step's one sync
  rec.grad_norm = p.optimizer->grad_norm();  // before clipping, as HF logs it; the same on every rank
  // The schedule follows the updates actually made (HF: the scheduler does not step when the update is skipped).
  const double lr_multiplier = p.schedule->lr_multiplier(p.optimizer->step_count());
  rec.learning_rate = config_.optimizer.learning_rate * lr_multiplier;
  if (config_.optimizer.projector_lr > 0) rec.projector_learning_rate = config_.optimizer.projector_lr * lr_multiplier;

  // -- NaN guard, clipping, AdamW
  const bool finite = std::isfinite(rec.loss) && std::isfinite(rec.grad_norm);
  if (sums.targets == 0) {
    rec.update_skipped = true;
    if (p.main_rank) std::cerr << "warning: step " << rec.step << ": no supervised token in the step (samples: "
                               << join_ids(rec.sample_ids) << "); no update\n";
  } else if (!finite) {
    rec.update_skipped = true;
    ++state.consecutive_bad_steps;
    if (p.main_rank)
      std::cerr << "warning: step " << rec.step << ": non-finite loss (" << py_repr(rec.loss) << ") or grad_norm ("
                << py_repr(rec.grad_norm) << "); update skipped (" << state.consecutive_bad_steps << " in a row of at most "
                << loop.max_bad_steps << "); samples: " << join_ids(rec.sample_ids) << "\n";
  } else {
    state.consecutive_bad_steps = 0;
    p.optimizer->step(lr_multiplier, clip_coefficient(rec.grad_norm, loop.max_grad_norm));
  }
  p.optimizer->zero_grad();
  // ================================================================ TRAINING STEP END

  // -- bookkeeping: counts, position, epoch, loss sums
  rec.num_target_tokens = sums.targets;
  rec.num_samples = sums.samples;
  rec.num_tokens = sums.tokens;
  rec.skipped_samples = sums.skipped;
  state.skipped_samples += sums.skipped;
  state.seen_samples += sums.samples;
  rec.skipped_share = skipped_share(state);
  ++state.global_step;
  const BatchStream& s = *p.stream;
  state.next_epoch = s.epoch_done() ? s.epoch() + 1 : s.epoch();
  state.next_batch = s.epoch_done() ? 0 : s.batch();
  state.epoch = s.epoch() + static_cast<double>(s.batch()) / static_cast<double>(s.per_epoch());
  rec.epoch = state.epoch;
  if (std::isfinite(rec.loss)) {  // HF's logging_nan_inf_filter: bad steps do not enter the averages
    state.loss_total += rec.loss;
    ++state.loss_steps;
    state.window_loss += rec.loss;
    ++state.window_steps;
  }
  rec.step_time_s = seconds_since(step_start);
  rec.data_wait_s = data_wait;
  return rec;
}

// One micro-batch: forward (summed CE over its supervised tokens), backward. A micro-batch whose samples
// were all bad, or that the model rejects, contributes nothing (but still takes its part in the collectives).
void Trainer::forward_backward_step(const Batch& batch, bool last, StepSums& sums) {
  Parts& p = *parts_;
  p.optimizer->begin_backward(last);
  if (batch.size() == 0) {
    if (last) sums.reduce(p.pg.get(), p.device);
    return;
  }
  LlavaOutput out;
  try {
    out = p.model->forward(batch.inputs);  // [B,T] ids/labels + [N,3,H,W] pixels -> summed CE
  } catch (const Error& e) {  // inputs the model rejects: the micro-batch is skipped, never the run
    if (config_.loop.fail_on_bad_sample) throw;
    std::cerr << "warning: step " << p.state.global_step + 1 << ": micro-batch skipped (samples "
              << join_ids(batch.sample_ids) << "): " << e.what() << "\n";
    sums.skipped += batch.size();
    sums.samples -= batch.size();
    if (last) sums.reduce(p.pg.get(), p.device);
    return;
  }
  const int64_t n = out.num_target_tokens;
  // Average over the whole step's tokens (default): backward the sum now, divide by the step's token count
  // once all micro-batches are in. Otherwise each micro-batch's own mean (LLaVA-1.5 / HF 4.37).
  torch::Tensor objective = config_.loop.average_tokens_across_devices
                                ? out.loss_sum
                                : out.loss_sum / static_cast<double>(std::max<int64_t>(n, 1));
  sums.add(out.loss_sum, n);
  if (last) sums.reduce(p.pg.get(), p.device);
  if (objective.requires_grad()) objective.backward();
  p.optimizer->end_backward();
}

// ------------------------------------------------------------------------------------------ evaluation

// HF's IntervalStrategy after a step: "steps" every `every` steps, "epoch" when the step ended an epoch.
bool Trainer::due(const std::string& strategy, int64_t every) const {
  const TrainerState& state = parts_->state;
  if (strategy == "steps") return every > 0 && state.global_step % every == 0;
  if (strategy == "epoch") return state.next_batch == 0;  // the step took the epoch's last micro-batch
  return false;
}

// --evaluation_strategy: rank 0 scores --eval_data_path with the current weights (every rank holds all of
// them, ZeRO-1/2 included; the others wait), logged as HF logs it: eval_loss, eval_token_accuracy (and
// eval_exact_match with --eval_generate, generated with the generate flags), eval_runtime,
// eval_samples_per_second.
void Trainer::evaluate_held_out() {
  Parts& p = *parts_;
  if (p.main_rank) {
    const auto start = Clock::now();
    EvalOptions eo;
    eo.batch_size = config_.eval.batch_size;
    eo.num_workers = config_.loop.dataloader_num_workers;
    eo.pad_id = p.data->tokenizer.pad_id();
    const EvalSummary loss = evaluate(*p.model, *p.eval_data, p.data->example, eo, [](const EvalSample&) {});
    LogDict d;
    d.add("eval_loss", loss.loss());
    d.add("eval_token_accuracy", loss.accuracy());
    if (config_.eval.generate) {
      const GenerateOptions go = generate_options_from(config_.data, p.data->tokenizer, p.model->config());
      const GenerationSummary g =
          generate_and_score(*p.model, *p.eval_data, p.data->example, go, [](const GeneratedSample&) {});
      d.add("eval_exact_match", g.exact_match());
    }
    const double seconds = seconds_since(start);
    d.add("eval_runtime", py_round(seconds, 4));
    d.add("eval_samples_per_second", py_round(static_cast<double>(loss.samples) / seconds, 3));
    if (loss.skipped > 0)
      p.log->warning("warning: evaluation: " + std::to_string(loss.skipped) + " bad sample(s) of " +
                     config_.eval.data_path + " skipped");
    p.log->eval(p.state, d);
    p.model->train();
  }
  if (p.pg) p.pg->barrier();
}

// ------------------------------------------------------------------------------------------ checkpoints

// checkpoint-<global_step>: the model (LoRA: base + adapter files), optimizer, RNG, trainer state. Several
// processes (collective): rank 0 creates checkpoint-N.tmp; every rank writes its optimizer part and RNG state
// into it between two barriers; rank 0 then adds trainer_state.json and renames it; a last barrier keeps
// everyone at the same point.
void Trainer::save_checkpoint(TrainResult& result) {
  Parts& p = *parts_;
  const std::string& out = config_.checkpoint.output_dir;
  const int64_t step = p.state.global_step;
  auto part = [&](const std::string& name) {
    if (hooks_.on_checkpoint_part) hooks_.on_checkpoint_part(name);
  };
  auto rank_parts = [&](const std::string& dir) {
    part("optimizer");
    save_optimizer_state(*p.optimizer, dir, p.rank);
    part("rng_state");
    save_rng_state(dir, p.rank, p.world);
  };
  const std::string final_dir = (fs::path(out) / checkpoint_dir_name(step)).string();
  if (!p.main_rank) {
    p.pg->barrier();  // rank 0 has created the directory
    rank_parts(final_dir + ".tmp");
    p.pg->barrier();  // every rank's part is written
    p.pg->barrier();  // rank 0 has renamed it
    result.last_checkpoint = final_dir;
    return;
  }
  const std::string dir = save_checkpoint_atomic(out, step, [&](const std::string& tmp) {
    if (p.pg) p.pg->barrier();
    part("model");
    SaveOptions sv;
    sv.atomic = false;
    sv.tokenizer_source_dir = config_.checkpoint.tokenizer_source_dir;
    save_hf_llava(*p.model, tmp, sv);  // the base model (adapters are not part of it)
    if (config_.lora_enable) save_lora_adapter(*p.model, tmp, config_.model_dir, config_.lora);
    if (config_.stage.tune_mm_mlp_adapter) save_projector(*p.model, tmp + "/mm_projector.safetensors");
    rank_parts(tmp);
    if (p.pg) p.pg->barrier();
    part("trainer_state");
    p.state.write(tmp + "/trainer_state.json");  // last: a checkpoint with it is complete
  });
  rotate_checkpoints(out, config_.checkpoint.save_total_limit);
  if (p.pg) p.pg->barrier();
  result.last_checkpoint = dir;
}

// The adapters alone (PEFT layout) in output_dir/lora_adapter, then folded in: the final model is a plain
// LLaVA model directory in output_dir (+ mm_projector.safetensors for the projector-only stage).
void Trainer::save_final_model() {
  Parts& p = *parts_;
  const fs::path out(config_.checkpoint.output_dir);
  if (config_.lora_enable) {
    if (p.main_rank) {
      const fs::path dir = out / "lora_adapter", tmp = out / "lora_adapter.tmp";
      llava::remove_tree(tmp);
      fs::create_directories(tmp);
      save_lora_adapter(*p.model, tmp.string(), config_.model_dir, config_.lora);
      llava::remove_tree(dir);
      fs::rename(tmp, dir);
    }
    merge_lora(*p.model);
  }
  if (!p.main_rank) return;
  llava::save_final_model(*p.model, out.string(), config_.checkpoint.tokenizer_source_dir);
  if (config_.stage.tune_mm_mlp_adapter) save_projector(*p.model, (out / "mm_projector.safetensors").string());
}

// HF's summary dict, trainer_state.json, and the skipped-sample report.
void Trainer::report_end(TrainResult& result) {
  Parts& p = *parts_;
  TrainerState& state = p.state;
  const double runtime = seconds_since(p.start);
  const int64_t steps_run = state.global_step - p.first_step;
  const double train_loss = state.loss_steps ? state.loss_total / state.loss_steps : 0.0;
  int64_t samples_run = 0;  // samples actually trained on by all ranks (HF estimates steps x batch)
  for (const auto& s : result.steps) samples_run += s.num_samples;
  LogDict summary;
  summary.add("train_runtime", py_round(runtime, 4));
  summary.add("train_samples_per_second", py_round(static_cast<double>(samples_run) / runtime, 3));
  summary.add("train_steps_per_second", py_round(static_cast<double>(steps_run) / runtime, 3));
  summary.add("train_loss", train_loss);
  summary.add("epoch", py_round(state.epoch, 2));
  const double share = skipped_share(state);
  p.log->end(state, summary);
  if (p.main_rank) {
    state.write((fs::path(config_.checkpoint.output_dir) / "trainer_state.json").string());
    if (share > config_.loop.max_skipped_share)
      std::cerr << "WARNING: " << state.skipped_samples << " of " << state.skipped_samples + state.seen_samples
                << " samples (" << py_round(100 * share, 2)
                << "%) were skipped as bad, more than --max_skipped_share " << config_.loop.max_skipped_share
                << ": check the data (llava-train check-data) before trusting this model\n";
    std::cerr << "saved the final model to " << config_.checkpoint.output_dir
              << (config_.stage.tune_mm_mlp_adapter ? " (projector: mm_projector.safetensors)" : "") << "\n";
  }
  if (p.pg) p.pg->barrier();  // the other ranks end once the model is written
  result.global_step = state.global_step;
  result.train_loss = train_loss;
  result.skipped_samples = state.skipped_samples;
}

TrainResult train(const Options& options, const TrainHooks& hooks) {
  return Trainer(TrainConfig::from_options(options), hooks).train();
}

}  // namespace llava
