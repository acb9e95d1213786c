#include "llava/model/checkpoint.h"

#include <cmath>
#include <filesystem>

#include "llava/error.h"
#include "llava/model/linear_layer.h"
#include "llava/model/param_init.h"
#include "model/config_json.h"
#include "model/weights.h"
#include "llava/fs_util.h"

namespace llava {
namespace fs = std::filesystem;

namespace {

bool starts_with(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
bool ends_with(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

// Buffers some checkpoints carry that are not parameters here.
bool is_ignorable_buffer(const std::string& n) {
  return ends_with(n, "rotary_emb.inv_freq") || ends_with(n, "embeddings.position_ids");
}

// ---- projector keys: HF linear_k <-> LLaVA builder indices (Sequential: Linear at 0, 2, 4, ...; plain Linear
// for `linear` has no index).

std::optional<std::string> projector_param_from_suffix(const std::string& suffix, const std::string& type) {
  const bool linear = type == "linear";
  auto dot = suffix.find('.');
  if (dot == std::string::npos) {
    if (linear && (suffix == "weight" || suffix == "bias")) return "multi_modal_projector.linear_1." + suffix;
    return std::nullopt;
  }
  const std::string head = suffix.substr(0, dot), leaf = suffix.substr(dot + 1);
  if (leaf != "weight" && leaf != "bias") return std::nullopt;
  if (starts_with(head, "linear_")) return "multi_modal_projector." + suffix;
  if (head.empty() || head.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  const int idx = std::stoi(head);
  if (idx % 2 != 0) return std::nullopt;
  return "multi_modal_projector.linear_" + std::to_string(idx / 2 + 1) + "." + leaf;
}

// "multi_modal_projector.linear_2.weight" -> "2.weight" (mlp) or "weight" (linear)
std::string projector_suffix_of(const std::string& model_name, const std::string& type) {
  const std::string prefix = "multi_modal_projector.linear_";
  std::string rest = model_name.substr(prefix.size());  // "2.weight"
  auto dot = rest.find('.');
  const int k = std::stoi(rest.substr(0, dot));
  const std::string leaf = rest.substr(dot + 1);
  if (type == "linear") return leaf;
  return std::to_string(2 * (k - 1)) + "." + leaf;
}

NameScheme hf_scheme(const LlavaConfig& c) {
  const bool tied = c.text.tie_word_embeddings;
  // vision_use_head false: a pooling head in the file is known and unused (transformers < 4.41 saves one)
  const bool skip_head = c.vision.is_siglip() && !c.vision.use_head;
  NameScheme s;
  s.to_checkpoint = [](const std::string& m) { return m; };
  s.to_model = [tied, skip_head](const std::string& n) -> std::optional<std::string> {
    if (is_ignorable_buffer(n)) return std::string();
    std::string m = n;
    if (starts_with(n, "model.language_model.")) m = "language_model.model." + n.substr(21);
    else if (n == "model.image_newline") m = "image_newline";  // LlavaNext in transformers >= 4.52
    else if (starts_with(n, "model.vision_tower.")) m = "vision_tower." + n.substr(19);
    else if (starts_with(n, "model.multi_modal_projector.")) m = "multi_modal_projector." + n.substr(28);
    else if (n == "lm_head.weight") m = "language_model.lm_head.weight";
    if (tied && m == "language_model.lm_head.weight") return std::string();
    if (skip_head && starts_with(m, "vision_tower.vision_model.head.")) return std::string();
    return m;
  };
  return s;
}

NameScheme original_scheme(const LlavaConfig& c) {
  const bool tied = c.text.tie_word_embeddings;
  const std::string type = c.projector_type;
  NameScheme s;
  s.to_checkpoint = [type](const std::string& m) -> std::string {
    if (starts_with(m, "language_model.model.")) return "model." + m.substr(21);
    if (m == "language_model.lm_head.weight") return "lm_head.weight";
    if (starts_with(m, "multi_modal_projector.")) return "model.mm_projector." + projector_suffix_of(m, type);
    if (starts_with(m, "vision_tower.")) return "model.vision_tower.vision_tower." + m.substr(13);
    if (m == "image_newline") return "model.image_newline";  // LLaVA-1.6: a parameter of LlavaMetaModel
    return "";
  };
  s.to_model = [tied, type](const std::string& n) -> std::optional<std::string> {
    if (is_ignorable_buffer(n)) return std::string();
    if (n == "model.image_newline") return std::string("image_newline");
    if (starts_with(n, "model.mm_projector.")) return projector_param_from_suffix(n.substr(19), type);
    if (starts_with(n, "model.vision_tower.vision_tower.")) return "vision_tower." + n.substr(32);
    if (starts_with(n, "model.")) return "language_model.model." + n.substr(6);
    if (n == "lm_head.weight") return tied ? std::string() : std::string("language_model.lm_head.weight");
    return std::nullopt;
  };
  return s;
}

NameScheme llm_scheme(const LlavaConfig& c) {
  const bool tied = c.text.tie_word_embeddings;
  NameScheme s;
  s.to_checkpoint = [](const std::string& m) -> std::string {
    if (starts_with(m, "language_model.")) return m.substr(15);
    return "";
  };
  s.to_model = [tied](const std::string& n) -> std::optional<std::string> {
    if (is_ignorable_buffer(n)) return std::string();
    if (starts_with(n, "model.")) return "language_model." + n;
    if (n == "lm_head.weight") return tied ? std::string() : std::string("language_model.lm_head.weight");
    return std::nullopt;
  };
  return s;
}

NameScheme clip_scheme() {
  NameScheme s;
  s.to_checkpoint = [](const std::string& m) -> std::string {
    if (starts_with(m, "vision_tower.")) return m.substr(13);
    return "";
  };
  s.to_model = [](const std::string& n) -> std::optional<std::string> {
    if (is_ignorable_buffer(n)) return std::string();
    // a full CLIPModel / SiglipModel: the text tower and the projections are not ours
    if (starts_with(n, "text_model.") || starts_with(n, "text_projection.") || starts_with(n, "visual_projection.") ||
        n == "logit_scale" || n == "logit_bias")
      return std::string();
    if (starts_with(n, "vision_model.")) return "vision_tower." + n;
    return std::nullopt;
  };
  return s;
}

NameScheme projector_scheme(const std::string& type) {
  NameScheme s;
  s.to_checkpoint = [type](const std::string& m) -> std::string {
    if (starts_with(m, "multi_modal_projector.")) return "model.mm_projector." + projector_suffix_of(m, type);
    return "";
  };
  s.to_model = [type](const std::string& n) -> std::optional<std::string> {
    // LLaVA's get_w: everything after the first "mm_projector."
    auto pos = n.find("mm_projector.");
    if (pos != std::string::npos) return projector_param_from_suffix(n.substr(pos + 13), type);
    if (starts_with(n, "multi_modal_projector.")) return projector_param_from_suffix(n.substr(22), type);
    return projector_param_from_suffix(n, type);
  };
  return s;
}

// The parameters under their checkpoint-facing (base model) names: a LoRA-wrapped projection counts as the
// projection it wraps; adapter tensors are not part of the model (linear_layer.h).
std::map<std::string, torch::Tensor> params_of(const torch::nn::Module& m, const std::string& prefix = "") {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, tensor] : base_model_parameters(m))
    if (starts_with(name, prefix)) out[name] = tensor;
  return out;
}

void merge_report(LoadReport& into, const LoadReport& r) {
  into.loaded.insert(r.loaded.begin(), r.loaded.end());
  into.unexpected.insert(into.unexpected.end(), r.unexpected.begin(), r.unexpected.end());
  into.file_of.insert(r.file_of.begin(), r.file_of.end());
}

// A model every parameter of which load_llava loads or initialises explicitly (check_complete enforces it):
// built without the default random init, which would be overwritten, and allocated in `dtype` directly.
LlavaForCausalLM build_for_loading(const LlavaConfig& config, torch::Dtype dtype) {
  LlavaForCausalLM model{nullptr};
  {
    SkipParameterInit skip;
    model = LlavaForCausalLM(config);
  }
  if (dtype != torch::kFloat32) {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.set_data(torch::empty(p.sizes(), p.options().dtype(dtype)));
  }
  return model;
}

void load_clip_dir(LlavaForCausalLMImpl& model, const std::string& clip_dir, LoadReport& report, bool map_weights) {
  auto targets = params_of(model, "vision_tower.");
  auto scheme = clip_scheme();
  LoadReport r = load_weights(WeightFiles::in_dir(clip_dir), scheme, targets, map_weights);
  check_complete(targets, r, scheme, clip_dir);
  merge_report(report, r);
}

// ---- writing helpers

fs::path normalized_dir(const std::string& dir) {
  fs::path d = fs::path(dir).lexically_normal();
  if (d.filename().empty()) d = d.parent_path();
  return d;
}

// Where to write (DIR.tmp when atomic) and how to finish.
struct DirWriter {
  fs::path final_dir, work_dir;
  bool atomic;
  DirWriter(const std::string& dir, bool atomic_) : final_dir(normalized_dir(dir)), atomic(atomic_) {
    work_dir = final_dir;
    if (atomic) {
      work_dir += ".tmp";
      llava::remove_tree(work_dir);
    }
    fs::create_directories(work_dir);
  }
  void commit() {
    if (!atomic) return;
    fs::path old = final_dir;
    old += ".old";
    llava::remove_tree(old);
    if (fs::exists(final_dir)) fs::rename(final_dir, old);
    fs::rename(work_dir, final_dir);
    llava::remove_tree(old);
  }
};

void copy_if_present(const std::string& src_dir, const fs::path& dst_dir, const std::vector<std::string>& names) {
  if (src_dir.empty()) return;
  for (const auto& n : names) {
    fs::path src = fs::path(src_dir) / n;
    if (fs::exists(src)) fs::copy_file(src, dst_dir / n, fs::copy_options::overwrite_existing);
  }
}

// SentencePiece (tokenizer.model) and byte-level BPE (tokenizer.json; vocab.json + merges.txt for HF's slow
// Qwen2Tokenizer) files, the processor's, and the chat template transformers keeps beside them.
const std::vector<std::string> kTokenizerFiles = {"tokenizer.model",   "tokenizer.json",          "vocab.json",
                                                  "merges.txt",        "tokenizer_config.json",   "special_tokens_map.json",
                                                  "added_tokens.json", "preprocessor_config.json", "chat_template.json"};

std::string dtype_name_of(const TensorsToSave& t) {
  for (const auto& x : t.tensors)
    if (x.is_floating_point()) return hf_dtype_name(x.scalar_type());
  return "float32";
}

void write_weights(const fs::path& dir, const TensorsToSave& t, uint64_t max_shard_bytes) {
  write_safetensors_sharded(dir.string(), t.views(), max_shard_bytes);
}

}  // namespace

// ---------------------------------------------------------------- loading

void load_projector(LlavaForCausalLMImpl& model, const std::string& path) {
  auto targets = params_of(model, "multi_modal_projector.");
  auto scheme = projector_scheme(model.config().projector_type);
  LoadReport r = load_weights(WeightFiles::single(path), scheme, targets);
  check_complete(targets, r, scheme, path);
}

LoadedLlava load_llava(const std::string& model_dir, const LoadOptions& o) {
  LoadedLlava out;
  std::string kind;
  out.config = resolve_llava_config(model_dir,
                                    {o.vision_tower, o.mm_projector_type, o.mm_vision_select_layer,
                                     o.mm_vision_select_feature},
                                    &out.notes, &kind);
  LoadReport report;

  if (kind == "llava") {
    out.format = out.config.hf_is_llava_next() ? "llava_next" : "llava";
    out.model = build_for_loading(out.config, o.dtype);
    auto targets = params_of(*out.model);
    auto scheme = hf_scheme(out.config);
    report = load_weights(WeightFiles::in_dir(model_dir), scheme, targets, o.map_weights);
    check_complete(targets, report, scheme, model_dir);
    if (!o.vision_tower.empty())
      out.notes.push_back("--vision_tower " + o.vision_tower + " ignored: the HF LLaVA directory holds its tower");
  } else if (kind == "llava_llama") {
    out.format = "llava_llama";
    out.model = build_for_loading(out.config, o.dtype);
    auto targets = params_of(*out.model);
    auto scheme = original_scheme(out.config);
    report = load_weights(WeightFiles::in_dir(model_dir), scheme, targets, o.map_weights);
    size_t tower_loaded = 0;
    for (const auto& n : report.loaded) tower_loaded += starts_with(n, "vision_tower.") ? 1 : 0;
    std::string clip_dir = o.vision_tower;
    if (tower_loaded > 0 && out.config.unfreeze_mm_vision_tower && !clip_dir.empty()) {
      // LLaVA-1.6: the tower is built from mm_vision_tower, then the checkpoint's (trained) copy overwrites it
      out.notes.push_back("vision tower weights from the checkpoint (unfreeze_mm_vision_tower); --vision_tower " +
                          clip_dir + " gives its config only");
      clip_dir.clear();
    }
    if (clip_dir.empty() && tower_loaded == 0) {
      clip_dir = resolve_vision_tower_dir(out.config.mm_vision_tower, model_dir);
      if (clip_dir.empty())
        throw Error(model_dir + ": the checkpoint has no vision tower weights and mm_vision_tower '" +
                    out.config.mm_vision_tower + "' is not a local directory (pass --vision_tower DIR)");
    }
    if (!clip_dir.empty()) {
      if (tower_loaded > 0) {
        out.notes.push_back("vision tower weights of the checkpoint replaced by " + clip_dir);
        for (auto it = report.loaded.begin(); it != report.loaded.end();)
          it = starts_with(*it, "vision_tower.") ? report.loaded.erase(it) : std::next(it);
      }
      out.notes.push_back("vision tower loaded from " + clip_dir);
      load_clip_dir(*out.model, clip_dir, report, o.map_weights);
    }
    check_complete(targets, report, scheme, model_dir);
  } else {  // llama: LLM + CLIP (+ projector)
    out.format = "llm+clip";
    out.model = build_for_loading(out.config, o.dtype);
    auto llm_targets = params_of(*out.model, "language_model.");
    auto scheme = llm_scheme(out.config);
    report = load_weights(WeightFiles::in_dir(model_dir), scheme, llm_targets, o.map_weights);
    check_complete(llm_targets, report, scheme, model_dir);
    load_clip_dir(*out.model, o.vision_tower, report, o.map_weights);
    if (o.pretrain_mm_mlp_adapter.empty() && !out.model->multi_modal_projector->linears.empty()) {
      torch::manual_seed(o.seed);
      torch::NoGradGuard no_grad;
      out.model->multi_modal_projector->reset_parameters();
      out.notes.push_back("projector '" + out.config.projector_type +
                          "' freshly initialised (no --pretrain_mm_mlp_adapter; seed " + std::to_string(o.seed) + ")");
    }
  }

  if (!o.pretrain_mm_mlp_adapter.empty()) {
    load_projector(*out.model, o.pretrain_mm_mlp_adapter);
    out.notes.push_back("projector loaded from " + o.pretrain_mm_mlp_adapter);
  }
  out.model->set_fused_attention(o.fused_attention);
  if (!o.fused_attention) out.notes.push_back("attention: eager (written out; --attn_implementation eager)");
  out.model->to(o.device);
  return out;
}

// ---------------------------------------------------------------- saving

std::vector<std::pair<std::string, std::string>> checkpoint_names(const LlavaForCausalLMImpl& model,
                                                                   const std::string& format) {
  NameScheme s;
  if (format == "llava") s = hf_scheme(model.config());
  else if (format == "llava_llama") s = original_scheme(model.config());
  else throw Error("checkpoint_names: unknown format '" + format + "' (llava or llava_llama)");
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& [name, tensor] : params_of(model)) out.emplace_back(name, s.to_checkpoint(name));
  return out;
}

void save_hf_llava(const LlavaForCausalLMImpl& model, const std::string& dir, const SaveOptions& o) {
  DirWriter w(dir, o.atomic);
  TensorsToSave t = collect_for_save(params_of(model), hf_scheme(model.config()), o.dtype);
  write_text_file_atomic((w.work_dir / "config.json").string(), model.config().to_hf_json_string(dtype_name_of(t)));
  write_weights(w.work_dir, t, o.max_shard_bytes);
  copy_if_present(o.tokenizer_source_dir, w.work_dir, kTokenizerFiles);
  w.commit();
}

void save_original_llava(const LlavaForCausalLMImpl& model, const std::string& dir, const SaveOptions& o) {
  DirWriter w(dir, o.atomic);
  TensorsToSave t = collect_for_save(params_of(model), original_scheme(model.config()), o.dtype);
  write_text_file_atomic((w.work_dir / "config.json").string(),
                         model.config().to_original_json_string(dtype_name_of(t)));
  write_weights(w.work_dir, t, o.max_shard_bytes);
  copy_if_present(o.tokenizer_source_dir, w.work_dir, kTokenizerFiles);
  w.commit();
}

void save_split(const LlavaForCausalLMImpl& model, const std::string& dir, const SaveOptions& o) {
  DirWriter w(dir, o.atomic);
  auto params = params_of(model);
  fs::path llm = w.work_dir / "llm", clip = w.work_dir / "clip";
  fs::create_directories(llm);
  fs::create_directories(clip);
  TensorsToSave lt = collect_for_save(params, llm_scheme(model.config()), o.dtype);
  write_text_file_atomic((llm / "config.json").string(), model.config().text.to_json_string());
  write_weights(llm, lt, o.max_shard_bytes);
  copy_if_present(o.tokenizer_source_dir, llm, kTokenizerFiles);
  TensorsToSave ct = collect_for_save(params, clip_scheme(), o.dtype);
  write_text_file_atomic((clip / "config.json").string(), model.config().vision.to_json_string());
  write_weights(clip, ct, o.max_shard_bytes);
  copy_if_present(o.tokenizer_source_dir, clip, {"preprocessor_config.json"});
  TensorsToSave pt = collect_for_save(params, projector_scheme(model.config().projector_type), o.dtype);
  if (!pt.names.empty()) write_safetensors((w.work_dir / "mm_projector.safetensors").string(), pt.views());
  w.commit();
}

void save_projector(const LlavaForCausalLMImpl& model, const std::string& path) {
  fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
  TensorsToSave pt = collect_for_save(params_of(model), projector_scheme(model.config().projector_type), std::nullopt);
  write_safetensors(path, pt.views());
}

// ---------------------------------------------------------------- init

LlavaForCausalLM init_random_model(const LlavaConfig& config, uint64_t seed) {
  torch::manual_seed(seed);
  LlavaForCausalLM model(config);
  torch::NoGradGuard no_grad;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor p = item.value();
    const double std = starts_with(name, "vision_tower.") ? config.vision.initializer_range
                                                          : config.text.initializer_range;
    if (name == "image_newline") {  // HF LlavaNext / LLaVA: N(0, 1/hidden)
      p.normal_(0.0, 1.0 / std::sqrt(static_cast<double>(config.text.hidden_size)));
    } else if (name.find("norm") != std::string::npos) {  // LayerNorm / RMSNorm (incl. CLIP's pre_layrnorm)
      ends_with(name, ".bias") ? p.zero_() : p.fill_(1.0);
    } else if (ends_with(name, ".bias") || ends_with(name, "_bias")) {  // (SigLIP head's in_proj_bias)
      p.zero_();
    } else {
      p.normal_(0.0, std);
    }
  }
  const int64_t pad = config.text.pad_token_id;
  if (pad >= 0 && pad < config.text.vocab_size) model->language_model->model->embed_tokens->weight[pad].zero_();
  return model;
}

void write_random_model_dir(const LlavaConfig& config, const std::string& dir, uint64_t seed, const SaveOptions& o) {
  LlavaForCausalLM model = init_random_model(config, seed);
  save_hf_llava(*model, dir, o);
}

}  // namespace llava
