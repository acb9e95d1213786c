// The run-level flags of HF's Trainer besides the step: held-out evaluation (--evaluation_strategy /
// --eval_strategy, --eval_steps, --eval_data_path, --eval_generate), --save_strategy, --dataloader_drop_last,
// and TensorBoard files (--report_to, --logging_dir, --run_name), on the tiny random model (no ../shared needed).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "llava/error.h"
#include "llava/train/trainer.h"
#include "tensorboard_reader.h"
#include "test_train_support.h"

namespace llava::testing {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<json> eval_lines(const std::string& out) {
  std::vector<json> evals;
  for (const auto& line : lines_of(read_file(out + "/metrics.jsonl"))) {
    json j = json::parse(line);
    if (j.contains("eval_loss")) evals.push_back(j);
  }
  return evals;
}

std::vector<std::string> checkpoints_in(const std::string& out) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(out))
    if (e.path().filename().string().rfind("checkpoint-", 0) == 0) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::string error_of(const Options& o) {
  return testing::error_of([&] { train(o); });
}

TEST(TrainEval, StepsStrategyEvaluatesTheWeightsOfThatStep) {
  const std::string out = train_tmp("train_eval_steps");
  const std::string data = write_tiny_data(out, "iItiIt");
  const std::string held_out = write_tiny_data(train_tmp("train_eval_heldout"), "tiI");
  Options o = tiny_options(data, out + "/run");
  o.evaluation_strategy = "steps";
  o.eval_steps = 2;
  o.eval_data_path = held_out;
  o.per_device_eval_batch_size = 2;
  TrainResult r = train(o);
  ASSERT_EQ(r.exit_code, 0) << r.message;
  const auto evals = eval_lines(out + "/run");
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals[0]["step"], 2);
  EXPECT_EQ(evals[1]["step"], 4);
  for (const char* key : {"eval_token_accuracy", "eval_runtime", "eval_samples_per_second", "epoch"})
    EXPECT_TRUE(evals[1].contains(key)) << key << " missing: " << evals[1].dump();
  EXPECT_NE(evals[0]["eval_loss"], evals[1]["eval_loss"]) << "the weights changed between steps 2 and 4";

  // The last evaluation saw the final weights: `llava-train eval` of the saved model gives the same loss.
  RunResult e = run_binary("eval --model_name_or_path " + out + "/run --data_path " + held_out + " --image_folder " +
                           tiny_data_dir().image_dir + " --model_max_length 256 --per_device_eval_batch_size 1");
  ASSERT_EQ(e.code, 0) << e.err;
  const json summary = json::parse(lines_of(e.out).back());
  std::printf("  in training: eval_loss %.9f, accuracy %.6f; eval command: %.9f, %.6f\n",
              evals[1]["eval_loss"].get<double>(), evals[1]["eval_token_accuracy"].get<double>(),
              summary["eval_loss"].get<double>(), summary["eval_token_accuracy"].get<double>());
  EXPECT_NEAR(evals[1]["eval_loss"].get<double>(), summary["eval_loss"].get<double>(), 1e-5);
  EXPECT_DOUBLE_EQ(evals[1]["eval_token_accuracy"].get<double>(), summary["eval_token_accuracy"].get<double>());

  // HF's log_history holds them too.
  const json state = json::parse(read_file(out + "/run/trainer_state.json"));
  int in_history = 0;
  for (const auto& entry : state["log_history"]) in_history += entry.contains("eval_loss");
  EXPECT_EQ(in_history, 2);
}

TEST(TrainEval, EpochStrategyAndGenerationScoreTheHeldOutAnswers) {
  const std::string out = train_tmp("train_eval_epoch");
  const std::string data = write_tiny_data(out, "iItiIt");  // 3 steps per epoch at batch 2
  Options o = tiny_options(data, out + "/run");
  o.max_steps = -1;
  o.num_train_epochs = 2;
  o.eval_strategy = "epoch";  // the newer name
  o.set_keys.insert("eval_strategy");
  o.eval_data_path = data;
  o.eval_generate = true;
  o.max_new_tokens = 3;
  TrainResult r = train(o);
  ASSERT_EQ(r.exit_code, 0) << r.message;
  const auto evals = eval_lines(out + "/run");
  ASSERT_EQ(evals.size(), 2u);
  EXPECT_EQ(evals[0]["step"], 3);
  EXPECT_EQ(evals[1]["step"], 6);
  ASSERT_TRUE(evals[1].contains("eval_exact_match")) << evals[1].dump();
  const double em = evals[1]["eval_exact_match"].get<double>();
  EXPECT_TRUE(em >= 0 && em <= 1) << em;
  EXPECT_EQ(em * 6, std::round(em * 6)) << "a share of the 6 answers";
}

TEST(TrainEval, EvaluationFlagsAreChecked) {
  const std::string out = train_tmp("train_eval_flags");
  const std::string data = write_tiny_data(out, "iIt");
  Options o = tiny_options(data, out + "/run");
  o.evaluation_strategy = "steps";
  EXPECT_NE(error_of(o).find("needs --eval_data_path"), std::string::npos) << error_of(o);
  o.evaluation_strategy = "sometimes";
  o.eval_data_path = data;
  EXPECT_NE(error_of(o).find("must be no, steps or epoch"), std::string::npos) << error_of(o);
  o.evaluation_strategy = "steps";
  o.eval_strategy = "epoch";
  o.set_keys.insert("evaluation_strategy");
  o.set_keys.insert("eval_strategy");
  EXPECT_NE(error_of(o).find("disagree"), std::string::npos) << error_of(o);
  Options s = tiny_options(data, out + "/run2");
  s.save_strategy = "always";
  EXPECT_NE(error_of(s).find("--save_strategy must be no, steps or epoch"), std::string::npos) << error_of(s);
}

TEST(TrainEval, SaveStrategyDecidesWhichCheckpointsAreWritten) {
  const std::string out = train_tmp("train_save_strategy");
  const std::string data = write_tiny_data(out, "iItiIt");  // 3 steps per epoch
  std::map<std::string, std::vector<std::string>> expected = {
      {"no", {}}, {"steps", {"checkpoint-2", "checkpoint-4"}}, {"epoch", {"checkpoint-3"}}};
  for (const auto& [strategy, names] : expected) {
    Options o = tiny_options(data, out + "/" + strategy);
    o.max_steps = 6;
    o.save_steps = 2;
    o.save_strategy = strategy;
    TrainResult r = train(o);
    ASSERT_EQ(r.exit_code, 0) << r.message;
    EXPECT_EQ(checkpoints_in(out + "/" + strategy), names) << "--save_strategy " << strategy;
    EXPECT_TRUE(fs::exists(out + "/" + strategy + "/model.safetensors")) << "the final model, whatever the strategy";
  }
}

TEST(TrainEval, DataloaderDropLastLeavesOutTheEpochsIncompleteBatch) {
  const std::string out = train_tmp("train_drop_last");
  const std::string data = write_tiny_data(out, "iItiI");  // 5 samples: batches of 2, 2 and 1
  for (const bool drop : {false, true}) {
    Options o = tiny_options(data, out + (drop ? "/drop" : "/keep"));
    o.max_steps = -1;
    o.num_train_epochs = 1;
    o.dataloader_drop_last = drop;
    TrainResult r = train(o);
    ASSERT_EQ(r.exit_code, 0) << r.message;
    ASSERT_EQ(r.steps.size(), drop ? 2u : 3u) << "--dataloader_drop_last " << drop;
    int64_t samples = 0;
    for (const auto& s : r.steps) samples += s.num_samples;
    EXPECT_EQ(samples, drop ? 4 : 5);
  }
}

TEST(TrainTensorBoard, ScalarsOfEveryLoggingStepReadBackWithTheirCrcs) {
  const std::string out = train_tmp("train_tensorboard");
  const std::string data = write_tiny_data(out, "iItiIt");
  Options o = tiny_options(data, out + "/run");
  o.report_to = "tensorboard";
  o.logging_steps = 2;
  o.run_name = "tiny-tb";
  o.evaluation_strategy = "steps";
  o.eval_steps = 4;
  o.eval_data_path = data;
  o.logging_dir = out + "/tb";
  TrainResult r = train(o);
  ASSERT_EQ(r.exit_code, 0) << r.message;
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(out + "/tb")) files.push_back(e.path().string());
  ASSERT_EQ(files.size(), 1u);
  EXPECT_NE(fs::path(files[0]).filename().string().find("events.out.tfevents."), std::string::npos) << files[0];
  const std::vector<tb::Event> events = tb::read_events(files[0]);  // checks both CRCs of every record
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_TRUE(events[1].has_session_log) << "a session start right after the file version";
  std::map<std::string, std::map<int64_t, float>> scalars;
  std::string args;
  for (const auto& e : events)
    for (const auto& v : e.values) {
      if (v.has_simple_value) scalars[v.tag][e.step] = v.simple_value;
      if (v.tag == "args/text_summary") args = v.tensor;
    }
  EXPECT_NE(args.find("tiny-tb"), std::string::npos) << "run_name in the args text";
  // metrics.jsonl (the unrounded per-step values) against the TensorBoard scalars of steps 2 and 4.
  std::map<int64_t, json> steps;
  for (const auto& line : lines_of(read_file(out + "/run/metrics.jsonl"))) {
    json j = json::parse(line);
    if (!j.contains("eval_loss")) steps[j["step"].get<int64_t>()] = j;
  }
  for (const char* tag : {"train/loss", "train/grad_norm", "train/learning_rate", "train/epoch",
                          "train/tokens_per_second", "train/samples_per_second", "train/data_wait_share",
                          "train/skipped_samples", "train/skipped_share", "eval/loss", "eval/token_accuracy"})
    EXPECT_TRUE(scalars.count(tag)) << tag << " not written";
  for (int64_t step : {2, 4}) {
    ASSERT_TRUE(scalars["train/loss"].count(step)) << "step " << step;
    const double window = (steps[step - 1]["loss"].get<double>() + steps[step]["loss"].get<double>()) / 2;
    EXPECT_NEAR(scalars["train/loss"][step], window, 1e-4) << "the window's mean, as HF logs it";
    EXPECT_FLOAT_EQ(scalars["train/grad_norm"][step], static_cast<float>(steps[step]["grad_norm"].get<double>()));
    const double tokens = steps[step - 1]["num_tokens"].get<double>() + steps[step]["num_tokens"].get<double>();
    const double seconds = steps[step - 1]["step_time_s"].get<double>() + steps[step]["step_time_s"].get<double>();
    EXPECT_NEAR(scalars["train/tokens_per_second"][step], tokens / seconds, 1e-3 * tokens / seconds);
    const float share = scalars["train/data_wait_share"][step];
    EXPECT_TRUE(share >= 0 && share <= 1) << share;
  }
  EXPECT_EQ(scalars["train/loss"].size(), 2u) << "logging steps only";
  EXPECT_EQ(scalars["eval/loss"].size(), 1u);
  EXPECT_FLOAT_EQ(scalars["eval/loss"][4], static_cast<float>(eval_lines(out + "/run")[0]["eval_loss"].get<double>()));
}

TEST(TrainTensorBoard, WandbFallsBackToTensorBoardFilesUnderHfsDefaultFolder) {
  const std::string out = train_tmp("train_tensorboard_wandb");
  const std::string data = write_tiny_data(out, "iIt");
  Options o = tiny_options(data, out + "/run");
  o.report_to = "wandb";
  o.max_steps = 2;
  TrainResult r = train(o);
  ASSERT_EQ(r.exit_code, 0) << r.message;
  ASSERT_TRUE(fs::exists(out + "/run/runs")) << "HF's default logging_dir: output_dir/runs/<date>_<host>";
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(out + "/run/runs"))
    if (e.is_regular_file()) {
      ++files;
      EXPECT_GE(tb::read_events(e.path().string()).size(), 3u);
    }
  EXPECT_EQ(files, 1u);
  Options none = tiny_options(data, out + "/none");
  none.max_steps = 1;
  ASSERT_EQ(train(none).exit_code, 0);
  EXPECT_FALSE(fs::exists(out + "/none/runs")) << "--report_to none (the default) writes no event file";
}

TEST(TrainTensorBoard, ResumedRunStartsItsSessionAfterTheCheckpoint) {
  // TensorBoard drops the steps >= a SessionLog START's step that earlier files hold: the steps an interrupted
  // run logged after its last checkpoint do not show twice.
  const std::string out = train_tmp("train_tensorboard_resume");
  const std::string data = write_tiny_data(out, "iItiIt");
  Options o = tiny_options(data, out + "/run");
  o.report_to = "tensorboard";
  o.logging_dir = out + "/tb";
  o.save_steps = 2;
  ASSERT_EQ(train(o).exit_code, 0);
  o.resume_from_checkpoint = out + "/run/checkpoint-2";
  ASSERT_EQ(train(o).exit_code, 0);
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(out + "/tb")) files.push_back(e.path().string());
  ASSERT_EQ(files.size(), 2u);
  std::vector<int64_t> starts, first_steps;
  for (const auto& f : files) {
    const auto events = tb::read_events(f);
    ASSERT_GE(events.size(), 3u) << f;
    ASSERT_TRUE(events[1].has_session_log) << f;
    starts.push_back(events[1].step);
    int64_t first = -1;
    for (const auto& e : events)
      if (first < 0 && !e.values.empty() && e.values[0].tag == "train/loss") first = e.step;
    first_steps.push_back(first);
  }
  std::sort(starts.begin(), starts.end());
  std::sort(first_steps.begin(), first_steps.end());
  EXPECT_EQ(starts, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(first_steps, (std::vector<int64_t>{1, 3}));
}

}  // namespace
}  // namespace llava::testing
