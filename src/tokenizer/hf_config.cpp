#include "hf_config.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "llava/error.h"
#include "llava/text_util.h"

namespace llava::hf {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("tokenizer: cannot open '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error("tokenizer: cannot read '" + path + "'");
  return ss.str();
}

nlohmann::json read_tokenizer_config(const std::string& dir, std::string* path_out) {
  const std::string path = (std::filesystem::path(dir) / "tokenizer_config.json").string();
  if (path_out) *path_out = path;
  if (!std::filesystem::exists(path)) return nlohmann::json::object();
  return read_json_object(path);
}

nlohmann::json read_json_object(const std::string& path) {
  nlohmann::json cfg;
  try {
    cfg = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    throw Error("tokenizer: " + path + ": invalid JSON: " + e.what());
  }
  if (!cfg.is_object()) throw Error("tokenizer: " + path + ": expected a JSON object");
  return cfg;
}

std::optional<std::string> special_token_text(const nlohmann::json& cfg, const char* key, const std::string& path) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  const auto& v = cfg[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  throw Error("tokenizer: " + path + ": '" + key + "' must be a string or an object with a string 'content'");
}

std::optional<bool> config_flag(const nlohmann::json& cfg, const char* key, const std::string& path) {
  if (!cfg.contains(key) || cfg[key].is_null()) return std::nullopt;
  if (!cfg[key].is_boolean()) throw Error("tokenizer: " + path + ": '" + key + "' must be true or false");
  return cfg[key].get<bool>();
}

std::string clean_up_tokenization(std::string text) {
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) text = replace_all(std::move(text), from, to);
  return text;
}

}  // namespace llava::hf
