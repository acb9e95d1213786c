#include "llava/options.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cxxopts.hpp>
#include <iomanip>
#include <sstream>

#include "llava/error.h"

namespace llava {
namespace {

// Every subcommand with the scope bit its flags carry (options.h).
const std::vector<std::pair<std::string, unsigned>> kSubcommands = {
    {"train", scope::kTrain},           {"preprocess", scope::kPreprocess}, {"eval", scope::kEval},
    {"generate", scope::kGenerate},     {"tokenize", scope::kTokenize},     {"check-data", scope::kCheckData},
    {"init-model", scope::kInit},       {"plan", scope::kPlan},             {"bench-data", scope::kBench},
    {"demo-data", scope::kDemo}};

bool parse_bool(const std::string& v, bool& out) {
  if (v == "true" || v == "True" || v == "TRUE" || v == "1" || v == "yes") return out = true, true;
  if (v == "false" || v == "False" || v == "FALSE" || v == "0" || v == "no") return out = false, true;
  return false;
}

template <typename T>
void parse_value(const std::string& key, const std::string& v, const std::string& source, T& out) {
  auto bad = [&](const char* what) {
    throw Error(source + ": --" + key + " expects " + what + ", got '" + v + "'");
  };
  if constexpr (std::is_same_v<T, bool>) {
    if (!parse_bool(v, out)) bad("true or false");
  } else if constexpr (std::is_same_v<T, StringList>) {  // a repeated flag: each occurrence adds one value
    out.push_back(v);
  } else if constexpr (std::is_same_v<T, std::string>) {
    out = v;
  } else {
    try {
      size_t used = 0;
      if constexpr (std::is_same_v<T, double>)
        out = std::stod(v, &used);
      else
        out = static_cast<T>(std::stoll(v, &used));
      if (used != v.size()) bad(std::is_same_v<T, double> ? "a number" : "an integer");
    } catch (const std::logic_error&) {
      bad(std::is_same_v<T, double> ? "a number" : "an integer");
    }
  }
}

template <typename T>
std::string show(const T& v) {
  if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
  else if constexpr (std::is_same_v<T, std::string>) return v;
  else if constexpr (std::is_same_v<T, StringList>) {
    std::string joined;
    for (const auto& item : v) joined += (joined.empty() ? "" : ", ") + item;
    return joined;
  } else {
    std::ostringstream ss;
    ss << v;
    return ss.str();
  }
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

// The subcommands that take `key` on the command line (scope:: bits; 0 for an unknown key).
unsigned scope_of(const std::string& key) {
  using namespace scope;
#define LLAVA_SCOPE(type, name, def, scope, help) \
  if (key == #name) return scope;
  LLAVA_OPTIONS(LLAVA_SCOPE)
#undef LLAVA_SCOPE
  return 0;
}

unsigned subcommand_scope(const std::string& name) {
  for (const auto& [n, bits] : kSubcommands)
    if (n == name) return bits;
  return scope::kAll;
}

bool is_bool_option(const std::string& key) {
#define LLAVA_IS_BOOL(type, name, def, scope, help) \
  if (key == #name) return std::is_same_v<type, bool>;
  LLAVA_OPTIONS(LLAVA_IS_BOOL)
#undef LLAVA_IS_BOOL
  return false;
}

bool is_list_option(const std::string& key) {
#define LLAVA_IS_LIST(type, name, def, scope, help) \
  if (key == #name) return std::is_same_v<type, StringList>;
  LLAVA_OPTIONS(LLAVA_IS_LIST)
#undef LLAVA_IS_LIST
  return false;
}

template <typename T>
void clear_if_list(T& value) {
  if constexpr (std::is_same_v<T, StringList>) value.clear();
}

// Empties a repeatable option, so that a higher layer (the command line over YAML) replaces its values.
void clear_list_option(Options& o, const std::string& key) {
#define LLAVA_CLEAR_LIST(type, name, def, scope, help) \
  if (key == #name) clear_if_list(o.name);
  LLAVA_OPTIONS(LLAVA_CLEAR_LIST)
#undef LLAVA_CLEAR_LIST
}

std::string unknown_key_message(const std::string& key, const std::string& source) {
  return source + ": unknown option '" + key + "' (did you mean '" + closest_option(key) + "'?)";
}

}  // namespace

std::vector<std::string> option_names() {
  std::vector<std::string> names;
#define LLAVA_NAME(type, name, def, scope, help) names.push_back(#name);
  LLAVA_OPTIONS(LLAVA_NAME)
#undef LLAVA_NAME
  return names;
}

std::string option_value(const Options& o, const std::string& key) {
#define LLAVA_VALUE(type, name, def, scope, help) \
  if (key == #name) return show<type>(o.name);
  LLAVA_OPTIONS(LLAVA_VALUE)
#undef LLAVA_VALUE
  throw Error(unknown_key_message(key, "option_value"));
}

std::string closest_option(const std::string& key) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& n : option_names()) {
    size_t d = edit_distance(key, n);
    if (d < best_d) best_d = d, best = n;
  }
  return best;
}

void set_option(Options& o, const std::string& key, const std::string& value, const std::string& source) {
#define LLAVA_SET(type, name, def, scope, help)        \
  if (key == #name) {                           \
    parse_value(key, value, source, o.name);    \
    o.set_keys.insert(key);                     \
    return;                                     \
  }
  LLAVA_OPTIONS(LLAVA_SET)
#undef LLAVA_SET
  throw Error(unknown_key_message(key, source));
}

void apply_yaml(Options& o, const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    throw Error(path + ": cannot read YAML config: " + e.what());
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) throw Error(path + ": the config must be a mapping of option: value");
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    if (key == "image_grid_pinpoints" && kv.second.IsSequence()) {  // a YAML list of [w, h]: its flow text
      YAML::Emitter flow;
      flow << YAML::Flow << kv.second;
      set_option(o, key, flow.c_str(), path);
      continue;
    }
    if (kv.second.IsSequence() && is_list_option(key)) {  // image: [a.png, b.png]
      for (const auto& item : kv.second) {
        if (!item.IsScalar()) throw Error(path + ": '" + key + "' must be a list of values");
        set_option(o, key, item.as<std::string>(), path);
      }
      continue;
    }
    if (!kv.second.IsScalar())
      throw Error(path + ": '" + key + "' must be a single value");
    set_option(o, key, kv.second.as<std::string>(), path);
  }
}

Command parse_command_line(int argc, char** argv) {
  Command cmd;
  std::vector<std::string> args(argv + 1, argv + argc);
  cmd.name = "train";  // the default when the first argument is a flag, as LLaVA's train.py
  if (!args.empty() && args[0].rfind("-", 0) != 0) {
    if (subcommand_scope(args[0]) == scope::kAll) {
      std::string known;
      for (const auto& [s, bits] : kSubcommands) known += " " + s;
      throw Error("unknown subcommand '" + args[0] + "' (subcommands:" + known + ")");
    }
    cmd.name = args[0];
    args.erase(args.begin());
  }

  // "--flag value" is how LLaVA's scripts pass booleans ("--bf16 True"); cxxopts wants "--flag=value".
  std::vector<std::string> norm;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    bool dummy;
    if (a.rfind("--", 0) == 0 && a.find('=') == std::string::npos && is_bool_option(a.substr(2)) &&
        i + 1 < args.size() && parse_bool(args[i + 1], dummy)) {
      norm.push_back(a + "=" + args[++i]);
    } else {
      norm.push_back(a);
    }
  }

  cxxopts::Options parser("llava-train", "");
  auto adder = parser.add_options();
  adder("h,help", "show help");
  adder("V,print_version", "print versions");
#define LLAVA_CXXOPT(type, name, def, scope, help)                                              \
  if (std::is_same_v<type, bool>)                                                        \
    adder(#name, help, cxxopts::value<std::string>()->implicit_value("true"));           \
  else                                                                                   \
    adder(#name, help, cxxopts::value<std::string>());
  LLAVA_OPTIONS(LLAVA_CXXOPT)
#undef LLAVA_CXXOPT

  std::vector<std::string> storage = {"llava-train"};
  storage.insert(storage.end(), norm.begin(), norm.end());
  // `--version` is LLaVA's template flag; the program version is printed by `llava-train --version`
  // alone (no other arguments), as users expect from any CLI.
  if (norm.size() == 1 && norm[0] == "--version") {
    cmd.version = true;
    return cmd;
  }
  std::vector<char*> cargv;
  for (auto& s : storage) cargv.push_back(s.data());
  cxxopts::ParseResult result;
  try {
    result = parser.parse(static_cast<int>(cargv.size()), cargv.data());
  } catch (const cxxopts::exceptions::no_such_option& e) {
    // cxxopts says "Option ‘x’ does not exist" (3.1: typographic quotes) or "Option 'x' ..." (3.2).
    std::string what = e.what(), key = what;
    for (auto [open, close] : {std::pair<std::string, std::string>{"\xE2\x80\x98", "\xE2\x80\x99"}, {"'", "'"}}) {
      size_t a = what.find(open), b = a == std::string::npos ? a : what.find(close, a + open.size());
      if (b != std::string::npos) {
        key = what.substr(a + open.size(), b - a - open.size());
        break;
      }
    }
    if (key.rfind("--", 0) == 0) key = key.substr(2);
    throw Error(unknown_key_message(key, "command line"));
  } catch (const cxxopts::exceptions::exception& e) {
    throw Error(std::string("command line: ") + e.what());
  }
  if (!result.unmatched().empty())
    throw Error("command line: unexpected argument '" + result.unmatched()[0] + "'");
  cmd.help = result.count("help") > 0;
  cmd.version = result.count("print_version") > 0;

  // defaults < YAML < command line
  if (result.count("config")) apply_yaml(cmd.options, result["config"].as<std::string>());
  std::set<std::string> replaced_lists;  // repeatable flags: the command line's occurrences replace YAML's list
  for (const auto& kv : result.arguments()) {
    if (kv.key() == "help" || kv.key() == "print_version") continue;
    if (!(scope_of(kv.key()) & subcommand_scope(cmd.name)))
      throw Error("command line: --" + kv.key() + " does not apply to `llava-train " + cmd.name +
                  "` (see `llava-train --help`; a --config YAML file may still carry it for other subcommands)");
    if (is_list_option(kv.key()) && replaced_lists.insert(kv.key()).second) clear_list_option(cmd.options, kv.key());
    set_option(cmd.options, kv.key(), kv.value(), "command line");
  }
  if (!cmd.options.deepspeed.empty()) {
    const DeepSpeedMapping ds = apply_deepspeed_config(cmd.options, cmd.options.deepspeed);
    std::string keys;
    for (const auto& k : ds.unmapped) keys += (keys.empty() ? "" : ", ") + k;
    if (!keys.empty())
      cmd.notes.push_back("--deepspeed " + cmd.options.deepspeed + ": no llava-train equivalent, ignored: " + keys);
    cmd.warnings.insert(cmd.warnings.end(), ds.warnings.begin(), ds.warnings.end());
  }
  const std::set<std::string>& given = cmd.options.set_keys;
  if ((given.count("torch_compile") && cmd.options.torch_compile) || given.count("torch_compile_backend") ||
      given.count("torch_compile_mode"))
    cmd.notes.push_back("--torch_compile: accepted; the C++ path needs no compilation step (nothing is compiled)");
  return cmd;
}

std::string help_text() {
  std::ostringstream ss;
  ss << "usage: llava-train [SUBCOMMAND] [--flag value ...]\n\n"
     << "subcommands:\n"
     << "  train        fine-tune a LLaVA model (default when the first argument is a flag)\n"
     << "  preprocess   write what the model will see for each sample (JSONL)\n"
     << "  eval         loss and token accuracy per sample, no training (--generate: also exact match)\n"
     << "  generate     answer each sample's last question (--data_path) or --prompt [--image F ...]\n"
     << "  tokenize     tokenize --text or --input with the model's tokenizer\n"
     << "  check-data   validate every sample and print a report (exit 1 if any is bad)\n"
     << "  init-model   write a randomly initialised model directory (--config, --output_dir)\n"
     << "  plan         per-rank memory estimate for a config and --world_size\n"
     << "  bench-data   time the data pipeline without the model\n"
     << "  demo-data    write the built-in multi-image demo's data and tokenizer (--output_dir)\n\n"
     << "every flag is also a key of the YAML file given by --config (defaults < YAML < command line);\n"
     << "booleans accept --flag, --flag true|false|True|False. `llava-train --version` alone prints versions.\n\n"
     << "options:\n";
#define LLAVA_HELP(type, name, def, scope, help)                                                                \
  ss << "  --" << std::left << std::setw(32) << #name << " " << help << " (default: " << show<type>(def) \
     << ")\n";
  LLAVA_OPTIONS(LLAVA_HELP)
#undef LLAVA_HELP
  return ss.str();
}

std::string options_table(const Options& o) {
  std::ostringstream ss;
  ss << "+----------------------------------+------------------------------------------------+\n";
#define LLAVA_ROW(type, name, def, scope, help)                                                   \
  if (o.set_keys.count(#name))                                                             \
    ss << "| " << std::left << std::setw(32) << #name << " | " << std::setw(46) << show<type>(o.name) << " |\n";
  LLAVA_OPTIONS(LLAVA_ROW)
#undef LLAVA_ROW
  ss << "+----------------------------------+------------------------------------------------+\n";
  return ss.str();
}

}  // namespace llava
