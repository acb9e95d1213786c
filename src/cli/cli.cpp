#include "llava/cli.h"

#include <cstdio>
#include <iostream>

#include "commands.h"
#include "llava/dist/process_group.h"
#include "llava/error.h"
#include "llava/options.h"
#include "llava/torch_compat.h"

namespace llava::cli {

int run(int argc, char** argv) {
  try {
    Command cmd = parse_command_line(argc, argv);
    if (cmd.version) {
      std::cout << "llava-train " << LLAVA_VERSION << " (LibTorch " << compat::torch_version_string()
                << (LLAVA_TORCH_HAS_CUDA ? ", CUDA" : ", CPU only") << ")\n";
      return 0;
    }
    if (cmd.help || argc == 1) {
      std::cout << help_text();
      return 0;
    }
    const Options& o = cmd.options;
    if (!o.deepspeed.empty())
      std::cerr << "warning: --deepspeed is accepted for compatibility and ignored; use --zero_stage 1|2 "
                   "(ZeRO-2 config ~ --zero_stage 2)\n";
    if (cmd.name == "tokenize") return cmd_tokenize(o);
    if (cmd.name == "preprocess") return cmd_preprocess(o);
    if (cmd.name == "check-data") return cmd_check_data(o);
    if (cmd.name == "bench-data") return cmd_bench_data(o);
    if (cmd.name == "demo-data") return cmd_demo_data(o);
    if (cmd.name == "train") return cmd_train(o);
    if (cmd.name == "eval") return cmd_eval(o);
    if (cmd.name == "init-model") return cmd_init_model(o);
    if (cmd.name == "plan") return cmd_plan(o);
    std::cerr << "llava-train " << cmd.name << ": unknown subcommand\n";
    return 1;
  } catch (const dist::PeerError& e) {  // design.md §6: 3 = a peer failed or timed out
    std::cerr << "error: " << e.what() << "\n";
    return dist::kPeerFailureExitCode;
  } catch (const Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace llava::cli
