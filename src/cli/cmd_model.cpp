// `llava-train init-model --model_config SPEC --output_dir DIR [--tokenizer_dir TOK] [--seed N]`: a randomly
// initialised HF LLaVA model directory (tests, demo, benchmarks).
//
// SPEC is an HF LlavaConfig in JSON or YAML; only the sizes are needed, transformers' defaults fill the rest:
//   text_config:   {hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
//                   intermediate_size, vocab_size, max_position_embeddings, ...}
//   vision_config: {hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, image_size,
//                   patch_size, ...}
//   mm_projector_type: linear | mlp2x_gelu (default) | ...      model_type: llava (default)
// An existing model's config.json works as a spec. Without text_config.vocab_size the tokenizer's size is used.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "commands.h"
#include "llava/error.h"
#include "llava/model/checkpoint.h"
#include "llava/model/config.h"
#include "llava/tokenizer.h"

namespace llava::cli {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json yaml_to_json(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: {
      json j = json::object();
      for (const auto& kv : n) j[kv.first.as<std::string>()] = yaml_to_json(kv.second);
      return j;
    }
    case YAML::NodeType::Sequence: {
      json j = json::array();
      for (const auto& x : n) j.push_back(yaml_to_json(x));
      return j;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = n.Scalar();
      if (n.Tag() == "!") return s;  // quoted: a string
      try {
        size_t used = 0;
        long long v = std::stoll(s, &used);
        if (used == s.size()) return v;
      } catch (...) {
      }
      try {
        size_t used = 0;
        double v = std::stod(s, &used);
        if (used == s.size()) return v;
      } catch (...) {
      }
      if (s == "true" || s == "True") return true;
      if (s == "false" || s == "False") return false;
      if (s == "null" || s == "~") return nullptr;
      return s;
    }
    default:
      return nullptr;
  }
}

json read_spec(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(path + ": cannot open");
  const std::string ext = fs::path(path).extension().string();
  try {
    if (ext == ".yaml" || ext == ".yml") return yaml_to_json(YAML::LoadFile(path));
    return json::parse(in);
  } catch (const YAML::Exception& e) {
    throw Error(path + ": bad YAML: " + e.what());
  } catch (const json::exception& e) {
    throw Error(path + ": bad JSON: " + e.what());
  }
}

}  // namespace

int cmd_init_model(const Options& o) {
  if (o.model_config.empty())
    throw Error("init-model: --model_config FILE (JSON/YAML with text_config and vision_config sizes) is required");
  if (o.output_dir.empty()) throw Error("init-model: --output_dir is required");
  json spec = read_spec(o.model_config);
  if (!spec.is_object()) throw Error(o.model_config + ": expected an object with text_config and vision_config");
  if (!spec.contains("model_type")) spec["model_type"] = "llava";
  if (o.set_keys.count("mm_projector_type")) spec["mm_projector_type"] = o.mm_projector_type;
  if (!spec.contains("text_config")) spec["text_config"] = json::object();

  if (!o.tokenizer_dir.empty()) {
    const int n = load_tokenizer(o.tokenizer_dir)->vocab_size();
    json& text = spec["text_config"];
    if (!text.contains("vocab_size")) text["vocab_size"] = n;
    if (text["vocab_size"].get<int64_t>() < n)
      throw Error(o.model_config + ": text_config.vocab_size " + text["vocab_size"].dump() + " is smaller than the " +
                  std::to_string(n) + " pieces of the tokenizer in " + o.tokenizer_dir);
  } else {
    std::cerr << "warning: no --tokenizer_dir: the model directory will have no tokenizer files\n";
  }

  // LlavaConfig parses files: hand it the completed spec as one.
  const fs::path tmp = fs::temp_directory_path() / ("llava_init_model_" + std::to_string(::getpid()) + ".json");
  std::ofstream(tmp) << spec.dump(2);
  LlavaConfig config;
  try {
    config = LlavaConfig::from_json_file(tmp.string());
  } catch (const Error& e) {
    fs::remove(tmp);
    throw Error(std::string(e.what()) + " (from " + o.model_config + ")");
  }
  fs::remove(tmp);

  SaveOptions so;
  so.tokenizer_source_dir = o.tokenizer_dir;
  write_random_model_dir(config, o.output_dir, static_cast<uint64_t>(o.seed), so);
  const auto& t = config.text;
  const auto& v = config.vision;
  std::cout << "init-model: wrote " << o.output_dir << " (LLaMA " << t.num_hidden_layers << "x" << t.hidden_size
            << ", vocab " << t.vocab_size << "; CLIP " << v.num_hidden_layers << "x" << v.hidden_size << ", "
            << v.image_size << "px/" << v.patch_size << "; projector " << config.projector_type << "; seed " << o.seed
            << ")\n";
  return 0;
}

}  // namespace llava::cli
