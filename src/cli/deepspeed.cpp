// --deepspeed FILE: a DeepSpeed JSON config (LLaVA's scripts pass scripts/zero2.json, zero3.json) read as HF's
// TrainingArguments reads it: "auto" means "the flag's value"; an explicit value fills a flag that was not
// given and must agree with one that was. The keys with a llava-train equivalent are mapped; the others are
// named once, as having none.
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "llava/error.h"
#include "llava/options.h"

namespace llava {

namespace {

using nlohmann::json;

bool is_auto(const json& v) { return v.is_string() && v.get<std::string>() == "auto"; }

std::string value_text(const json& v) {
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    std::ostringstream s;
    s.precision(17);
    s << v.get<double>();
    return s.str();
  }
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// One DeepSpeed key onto one flag: "auto" defers; a value sets an unset flag; a given flag must agree.
void map_key(Options& o, const json& section, const char* key, const std::string& flag, const std::string& file,
             const std::string& where, double scale = 1.0) {
  if (!section.contains(key) || is_auto(section[key]) || section[key].is_null()) return;
  const json& v = section[key];
  std::string text = value_text(v);
  if (scale != 1.0) {
    if (!v.is_number()) throw Error(file + ": " + where + key + " must be a number or \"auto\", got " + v.dump());
    text = std::to_string(static_cast<int64_t>(std::llround(v.get<double>() * scale)));
  }
  if (!o.set_keys.count(flag)) {
    set_option(o, flag, text, file + " (" + where + key + ")");
    return;
  }
  Options probe = o;  // the flag was given: the file's value must mean the same
  set_option(probe, flag, text, file + " (" + where + key + ")");
  if (option_value(probe, flag) != option_value(o, flag))
    throw Error(file + ": " + where + key + " = " + v.dump() + " disagrees with --" + flag +
                " given on the command line or in the YAML config (use \"auto\" in the file)");
}

}  // namespace

DeepSpeedMapping apply_deepspeed_config(Options& o, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open the --deepspeed config");
  json ds;
  try {
    ds = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(path + ": not a DeepSpeed JSON config: " + e.what());
  }
  if (!ds.is_object()) throw Error(path + ": a DeepSpeed config must be a JSON object");
  DeepSpeedMapping out;
  std::vector<std::string>& unmapped = out.unmapped;
  const json zero = ds.value("zero_optimization", json::object());
  if (!zero.is_object()) throw Error(path + ": zero_optimization must be an object");
  if (zero.contains("stage") && !is_auto(zero["stage"])) {
    if (!zero["stage"].is_number_integer()) throw Error(path + ": zero_optimization.stage must be 0, 1, 2 or 3");
    const int64_t stage = zero["stage"].get<int64_t>();
    if (stage == 3 && !o.set_keys.count("zero_stage"))
      throw Error(path + ": ZeRO stage 3 (parameter partitioning) is not supported yet: add --zero_stage 2 (optimizer "
                  "state and gradients sharded over the ranks, the same numbers; every rank holds all parameters, "
                  "which fit for LLaVA-7B/13B with --gradient_checkpointing: see `llava-train plan`)");
    if (stage == 3) {  // --zero_stage given: the command line's stage wins over the file's 3
      out.warnings.push_back(path + ": zero_optimization.stage 3 is not supported yet; running --zero_stage " +
                             std::to_string(o.zero_stage) + " as given (parameters are not partitioned)");
    } else {
      map_key(o, zero, "stage", "zero_stage", path, "zero_optimization.");
    }
  }
  map_key(o, zero, "reduce_bucket_size", "ddp_bucket_cap_mb", path, "zero_optimization.", 1.0 / (1 << 20));
  for (const auto& [key, value] : zero.items())
    if (key != "stage" && key != "reduce_bucket_size") unmapped.push_back("zero_optimization." + key);

  map_key(o, ds, "train_micro_batch_size_per_gpu", "per_device_train_batch_size", path, "");
  map_key(o, ds, "gradient_accumulation_steps", "gradient_accumulation_steps", path, "");
  map_key(o, ds, "gradient_clipping", "max_grad_norm", path, "");
  if (ds.contains("bf16")) map_key(o, ds["bf16"], "enabled", "bf16", path, "bf16.");
  if (ds.contains("fp16") && ds["fp16"].is_object() && ds["fp16"].contains("enabled") &&
      ds["fp16"]["enabled"].is_boolean() && ds["fp16"]["enabled"].get<bool>())
    throw Error(path + ": fp16.enabled true: llava-train trains in fp32 or bf16 (--bf16); set fp16.enabled to false or \"auto\"");
  for (const char* section : {"optimizer", "scheduler"}) {
    if (!ds.contains(section)) continue;
    const json params = ds[section].value("params", json::object());
    if (std::string(section) == "optimizer") {
      map_key(o, params, "lr", "learning_rate", path, "optimizer.params.");
      map_key(o, params, "eps", "adam_epsilon", path, "optimizer.params.");
      map_key(o, params, "weight_decay", "weight_decay", path, "optimizer.params.");
      if (params.contains("betas") && params["betas"].is_array() && params["betas"].size() == 2) {
        const json betas = {{"b1", params["betas"][0]}, {"b2", params["betas"][1]}};
        map_key(o, betas, "b1", "adam_beta1", path, "optimizer.params.betas.");
        map_key(o, betas, "b2", "adam_beta2", path, "optimizer.params.betas.");
      }
    } else {
      unmapped.push_back("scheduler (the schedule comes from --lr_scheduler_type)");
    }
  }
  for (const auto& [key, value] : ds.items()) {
    static const char* kMapped[] = {"zero_optimization", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                                    "gradient_clipping", "bf16", "fp16", "optimizer", "scheduler"};
    bool mapped = false;
    for (const char* m : kMapped) mapped = mapped || key == m;
    if (key == "train_batch_size" && is_auto(value)) mapped = true;  // derived: batch x accumulation x ranks
    if (!mapped) unmapped.push_back(key);
  }
  return out;
}

}  // namespace llava
