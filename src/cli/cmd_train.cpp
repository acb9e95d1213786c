// `llava-train train`: the training run (src/train/trainer.cpp) and its exit codes (design.md §6).
#include <torch/torch.h>

#include <iostream>

#include "commands.h"
#include "llava/dist/process_group.h"
#include "llava/train/trainer.h"

namespace llava::cli {

int cmd_train(const Options& o) {
  bool main_rank = true;  // several processes: rank 0 prints what all of them would (train() reports a bad environment)
  try {
    main_rank = dist::DistEnv::from_environment().rank == 0;
  } catch (const Error&) {
  }
  if (main_rank) std::cerr << options_table(o) << std::flush;  // every resolved setting, like llm.c's startup table
  TrainResult r;
  try {
    r = train(o);
  } catch (const c10::Error& e) {  // e.g. out of memory: a message, not an abort
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  }
  if (r.exit_code == 1) std::cerr << "error: " << r.message << "\n";
  if (r.exit_code == 2 && main_rank) std::cerr << r.message << "\n";
  return r.exit_code;
}

}  // namespace llava::cli
