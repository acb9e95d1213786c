#pragma once
// Learning-rate schedules, exactly transformers' closed forms (optimization.py: get_*_schedule_with_warmup).
// The optimizer step with 0-based index s (the s-th update; HF's LambdaLR last_epoch) uses
// lr = base_lr * lr_multiplier(s). No torch here.
#include <cstdint>
#include <string>

namespace llava {

struct Schedule {
  std::string type = "linear";  // cosine | linear | constant | constant_with_warmup
  int64_t total_steps = 1;      // T: optimizer steps of the whole run
  int64_t warmup_steps = 0;

  // Checks the type (llava::Error naming --lr_scheduler_type otherwise).
  Schedule(const std::string& type, int64_t total_steps, int64_t warmup_steps);
  double lr_multiplier(int64_t s) const;
};

// TrainingArguments.get_warmup_steps: warmup_steps when > 0, else ceil(warmup_ratio * total_steps).
int64_t warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t total_steps);

}  // namespace llava
