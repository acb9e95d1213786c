// The binary's entry: options -> one subcommand; every error that escapes one becomes a message and an exit
// code here, in one place (design.md §6: 1 bad input or configuration, 2 stopped by a signal after saving,
// 3 a peer failed). Messages are printed through printable(): input bytes never reach the terminal raw.
#include "llava/cli.h"

#include <c10/util/Exception.h>

#include <filesystem>
#include <iostream>
#include <new>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llava/dist/process_group.h"
#include "llava/error.h"
#include "llava/options.h"
#include "llava/text_util.h"
#include "llava/torch_compat.h"

namespace llava::cli {

namespace {

int dispatch(const Command& cmd, int argc) {
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
  for (const auto& note : cmd.notes) std::cerr << "note: " << printable(note) << "\n";
  for (const auto& warning : cmd.warnings) std::cerr << "warning: " << printable(warning) << "\n";
  if (o.set_keys.count("attn_implementation") && o.attn_implementation != "eager" && !compat::has_fused_attention())
    std::cerr << "note: --attn_implementation " << printable(o.attn_implementation) << ": LibTorch "
              << compat::torch_version_string() << " has no fused SDPA kernel; the written-out attention runs\n";
  if (cmd.name == "tokenize") return cmd_tokenize(o);
  if (cmd.name == "preprocess") return cmd_preprocess(o);
  if (cmd.name == "check-data") return cmd_check_data(o);
  if (cmd.name == "bench-data") return cmd_bench_data(o);
  if (cmd.name == "demo-data") return cmd_demo_data(o);
  if (cmd.name == "train") return cmd_train(o);
  if (cmd.name == "eval") return cmd_eval(o);
  if (cmd.name == "generate") return cmd_generate(o);
  if (cmd.name == "init-model") return cmd_init_model(o);
  if (cmd.name == "plan") return cmd_plan(o);
  throw Error("unknown subcommand '" + cmd.name + "'");
}

int fail(const std::string& what, int code = 1) {
  std::cerr << "error: " << printable(what) << "\n";
  return code;
}

}  // namespace

int run(int argc, char** argv) {
  try {
    return dispatch(parse_command_line(argc, argv), argc);
  } catch (const dist::PeerError& e) {
    return fail(e.what(), dist::kPeerFailureExitCode);
  } catch (const Error& e) {
    return fail(e.what());
  } catch (const std::filesystem::filesystem_error& e) {  // names the path(s) itself
    return fail(e.what());
  } catch (const nlohmann::json::exception& e) {
    return fail(std::string("JSON: ") + e.what());
  } catch (const c10::Error& e) {  // e.g. out of memory, a shape an input produced
    return fail(e.what_without_backtrace());
  } catch (const std::bad_alloc&) {
    return fail("out of memory (an input asked for more than this machine has?)");
  } catch (const std::exception& e) {
    return fail(e.what());
  }
}

}  // namespace llava::cli
