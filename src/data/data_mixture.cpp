#include "llava/data_mixture.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "llava/error.h"
#include "llava/sampler.h"
#include "llava/text_util.h"

namespace llava {
namespace {

namespace fs = std::filesystem;

struct Strategy {
  enum class Kind { kAll, kFirst, kEnd, kRandom } kind = Kind::kAll;
  bool percent = false;
  uint64_t numerator = 0, scale = 1;  // percent: numerator / scale percent
  uint64_t samples = 0;               // not percent: a number of samples
};

const char* const kStrategies = "all | first:N% | end:N% | random:N% (or first:N, end:N, random:N for N samples)";

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "12.5" -> 125 / 10 (at most 6 decimals); false when it is not a plain decimal number.
bool parse_decimal(const std::string& s, uint64_t& numerator, uint64_t& scale) {
  numerator = 0;
  scale = 1;
  bool dot = false, digits = false;
  for (char c : s) {
    if (c == '.' && !dot) {
      dot = true;
      continue;
    }
    if (!is_digit(c) || numerator > (uint64_t(1) << 50) || (dot && scale >= 1000000)) return false;
    numerator = numerator * 10 + static_cast<uint64_t>(c - '0');
    if (dot) scale *= 10;
    digits = true;
  }
  return digits;
}

Strategy parse_strategy(const std::string& text) {
  const std::string s = python_strip(text);
  Strategy st;
  if (s == "all") return st;
  const size_t colon = s.find(':');
  if (colon == std::string::npos || s.find(':', colon + 1) != std::string::npos)
    throw Error("unknown sampling_strategy '" + text + "' (expected " + kStrategies + ")");
  const std::string name = python_strip(s.substr(0, colon));
  std::string number = python_strip(s.substr(colon + 1));
  if (name == "first") st.kind = Strategy::Kind::kFirst;
  else if (name == "end") st.kind = Strategy::Kind::kEnd;
  else if (name == "random") st.kind = Strategy::Kind::kRandom;
  else throw Error("unknown sampling_strategy '" + text + "' (expected " + kStrategies + ")");
  st.percent = !number.empty() && number.back() == '%';
  if (st.percent) {
    number = python_strip(number.substr(0, number.size() - 1));
    const bool negative = !number.empty() && number[0] == '-';
    if (negative || !parse_decimal(number, st.numerator, st.scale) || st.numerator > 100 * st.scale)
      throw Error("sampling_strategy '" + text + "': the percentage must be a number between 0 and 100");
    return st;
  }
  uint64_t scale = 1;
  if (!parse_decimal(number, st.samples, scale) || scale != 1)
    throw Error("sampling_strategy '" + text + "': expected a percentage (N%) or a number of samples >= 0");
  return st;
}

// LLaVA-NeXT's math.ceil(N * n / 100), exactly (N may have decimals).
uint64_t selected_count(const Strategy& st, uint64_t n) {
  if (st.kind == Strategy::Kind::kAll) return n;
  if (!st.percent) return std::min(st.samples, n);
  const unsigned __int128 num = static_cast<unsigned __int128>(st.numerator) * n, den = 100 * st.scale;
  return static_cast<uint64_t>((num + den - 1) / den);
}

std::string as_string(const YAML::Node& node, const std::string& where) {
  if (!node.IsScalar()) throw Error(where + " must be a string");
  return node.as<std::string>();
}

// json_path as written -> the file to read: beside the YAML file, else from the working directory.
std::string resolve(const std::string& written, const fs::path& yaml_dir, const std::string& where) {
  const fs::path p(written);
  if (p.is_absolute()) {
    if (!fs::exists(p)) throw Error(where + ": no such file");
    return written;
  }
  const fs::path beside = yaml_dir / p;
  if (fs::exists(beside)) return beside.string();
  if (fs::exists(p)) return written;
  throw Error(where + ": no such file (looked for " + beside.string() + " and " + (fs::current_path() / p).string() +
              ")");
}

MixtureEntry read_entry(const YAML::Node& node, const fs::path& yaml_dir, const std::string& where) {
  if (!node.IsMap()) throw Error(where + ": each data set must be a map with json_path (and sampling_strategy)");
  MixtureEntry e;
  for (const auto& kv : node) {
    const std::string key = kv.first.as<std::string>();
    if (key == "json_path") e.written_path = as_string(kv.second, where + ": json_path");
    else if (key == "sampling_strategy") e.sampling_strategy = as_string(kv.second, where + ": sampling_strategy");
    else if (key == "image_folder") e.image_folder = as_string(kv.second, where + ": image_folder");
    else throw Error(where + ": unknown key '" + key + "' (a data set has json_path, sampling_strategy, image_folder)");
  }
  if (e.written_path.empty()) throw Error(where + ": no json_path");
  const std::string at = where + " (" + e.written_path + ")";
  const std::string ext = fs::path(e.written_path).extension().string();
  if (ext == ".yaml" || ext == ".yml") throw Error(at + ": a mixture cannot include another mixture");
  e.json_path = resolve(e.written_path, yaml_dir, at);
  try {
    check_sampling_strategy(e.sampling_strategy);
  } catch (const Error& err) {
    throw Error(at + ": " + err.what());
  }
  return e;
}

}  // namespace

void check_sampling_strategy(const std::string& sampling_strategy) { parse_strategy(sampling_strategy); }

std::vector<MixtureEntry> read_mixture(const std::string& yaml_path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(yaml_path);
  } catch (const YAML::BadFile&) {
    throw Error(yaml_path + ": cannot open the data mixture");
  } catch (const YAML::Exception& e) {
    throw Error(yaml_path + ": bad YAML: " + e.what());
  }
  if (!root.IsMap() || !root["datasets"])
    throw Error(yaml_path + ": a data mixture is a map with a 'datasets' list (LLaVA-NeXT's format)");
  for (const auto& kv : root)
    if (kv.first.as<std::string>() != "datasets")
      throw Error(yaml_path + ": unknown key '" + kv.first.as<std::string>() + "' (a data mixture has 'datasets')");
  const YAML::Node list = root["datasets"];
  if (!list.IsSequence() || list.size() == 0) throw Error(yaml_path + ": 'datasets' must be a non-empty list");
  const fs::path yaml_dir = fs::path(yaml_path).parent_path();
  std::vector<MixtureEntry> entries;
  for (size_t k = 0; k < list.size(); ++k)
    entries.push_back(read_entry(list[k], yaml_dir, yaml_path + ": datasets[" + std::to_string(k) + "]"));
  return entries;
}

RowSelection select_rows(const std::string& sampling_strategy, size_t file_samples, uint64_t seed, size_t entry_index) {
  const Strategy st = parse_strategy(sampling_strategy);
  RowSelection sel;
  sel.count = selected_count(st, file_samples);
  if (st.kind == Strategy::Kind::kEnd) sel.first = file_samples - sel.count;
  if (st.kind != Strategy::Kind::kRandom) return sel;
  // A seeded shuffle of the whole file, its first `count` kept in the shuffled order (LLaVA-NeXT's
  // random.shuffle(list)[:count]); each entry draws from its own stream.
  Rng rng(seed ^ (0x9e3779b97f4a7c15ull * (entry_index + 1)));
  const std::vector<uint32_t> perm = rng.permutation(file_samples);
  sel.rows.assign(perm.begin(), perm.begin() + static_cast<ptrdiff_t>(sel.count));
  return sel;
}

}  // namespace llava
