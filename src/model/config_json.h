#pragma once
// Model-component-private JSON helpers shared by config.cpp and checkpoint.cpp.
#include <nlohmann/json.hpp>
#include <string>

#include "llava/model/config.h"

namespace llava {

nlohmann::json read_json_file(const std::string& path);              // throws llava::Error naming the file
void write_text_file_atomic(const std::string& path, const std::string& text);

ClipVisionConfig clip_vision_config_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json clip_vision_config_to_json(const ClipVisionConfig& c);
LlamaConfig llama_config_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json llama_config_to_json(const LlamaConfig& c);
LlavaConfig llava_config_from_json(const nlohmann::json& j, const std::string& where, const std::string& config_dir,
                                   const std::string& vision_tower_dir);
// mm_vision_tower as a local directory (absolute, or relative to config_dir); "" when it is not one.
std::string resolve_vision_tower_dir(const std::string& mm_vision_tower, const std::string& config_dir);

}  // namespace llava
