// `llava-train train`: SIGINT/SIGTERM handling around the training run (src/train/trainer.cpp), and its
// exit codes (design.md §6).
#include <signal.h>
#include <unistd.h>

#include <iostream>

#include "commands.h"
#include "llava/dist/process_group.h"
#include "llava/train/trainer.h"

namespace llava::cli {

namespace {

extern "C" void on_stop_signal(int sig) {
  request_stop();
  const char msg[] = "\nllava-train: signal received; finishing the current step, then saving a checkpoint "
                     "(send it again to quit at once)\n";
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  ::signal(sig, SIG_DFL);  // a second Ctrl-C kills
}

// SIGINT/SIGTERM handlers for the duration of the run: the trainer finishes the step, saves, returns 2.
struct StopSignals {
  struct sigaction old_int {}, old_term {};
  StopSignals() {
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

int cmd_train(const Options& o) {
  bool main_rank = true;  // several processes: rank 0 prints what all of them would (the trainer reports a bad environment)
  try {
    main_rank = dist::DistEnv::from_environment().rank == 0;
  } catch (const Error&) {
  }
  if (main_rank) std::cerr << options_table(o) << std::flush;  // every resolved setting, like llm.c's startup table
  TrainConfig config = TrainConfig::from_options(o);
  StopSignals signals;
  Trainer trainer(std::move(config));
  TrainResult r = trainer.train();
  if (r.exit_code == 1) std::cerr << "error: " << r.message << "\n";
  if (r.exit_code == 2 && main_rank) std::cerr << r.message << "\n";
  return r.exit_code;
}

}  // namespace llava::cli
