#include "llava/train/schedule.h"

#include <algorithm>
#include <cmath>

#include "llava/error.h"

namespace llava {

Schedule::Schedule(const std::string& t, int64_t total, int64_t warmup)
    : type(t), total_steps(total), warmup_steps(warmup) {
  if (type != "cosine" && type != "linear" && type != "constant" && type != "constant_with_warmup")
    throw Error("--lr_scheduler_type '" + type + "' is not supported (cosine, linear, constant, constant_with_warmup)");
}

double Schedule::lr_multiplier(int64_t s) const {
  // The same float expressions as transformers (Python floats are doubles), so the values agree to the bit.
  const double step = static_cast<double>(s);
  const double warmup = static_cast<double>(warmup_steps);
  if (type == "constant") return 1.0;
  if (s < warmup_steps) {
    if (type == "constant_with_warmup") return step / std::max(1.0, warmup);
    return step / static_cast<double>(std::max<int64_t>(1, warmup_steps));
  }
  if (type == "constant_with_warmup") return 1.0;
  const double rest = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
  if (type == "linear") return std::max(0.0, static_cast<double>(total_steps - s) / rest);
  // cosine, num_cycles = 0.5
  const double progress = static_cast<double>(s - warmup_steps) / rest;
  return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 0.5 * 2.0 * progress)));
}

int64_t warmup_steps_for(int64_t warmup_steps, double warmup_ratio, int64_t total_steps) {
  if (warmup_steps > 0) return warmup_steps;
  return static_cast<int64_t>(std::ceil(static_cast<double>(total_steps) * warmup_ratio));
}

}  // namespace llava
