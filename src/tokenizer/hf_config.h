#pragma once
// Reading HF tokenizer_config.json, and the pieces of HF's decode that both tokenizer families share.
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace llava::hf {

std::string read_file(const std::string& path);  // throws llava::Error naming the file

// A JSON object file (tokenizer_config.json); throws llava::Error naming it when unreadable or not an object.
nlohmann::json read_json_object(const std::string& path);

// dir/tokenizer_config.json as an object; an empty object when the file does not exist.
// *path_out (optional) receives the path, for messages.
nlohmann::json read_tokenizer_config(const std::string& dir, std::string* path_out = nullptr);

// A special-token entry ("bos_token", ...): a plain string or an AddedToken object {"content": ...};
// nullopt when absent or null.
std::optional<std::string> special_token_text(const nlohmann::json& cfg, const char* key, const std::string& path);

// A boolean entry; nullopt when absent or null (HF's default then applies).
std::optional<bool> config_flag(const nlohmann::json& cfg, const char* key, const std::string& path);

// PreTrainedTokenizerBase.clean_up_tokenization (v4.37.2): " ." -> "." and the like, in HF's order.
std::string clean_up_tokenization(std::string text);

}  // namespace llava::hf
