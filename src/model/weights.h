#pragma once
// Model-component-private: reading named tensors from checkpoint files into parameters, and name schemes.
// Safetensors files are memory-mapped and each tensor is copied once, straight from the mapping into its
// parameter (from_blob + copy_, converting the dtype), or adopted in place (see load_weights). PyTorch .bin
// files (torch.save zip archives) are read with torch::pickle_load one file at a time.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "llava/safetensors.h"

namespace llava {

torch::Dtype torch_dtype_of(DType dtype);
DType safetensors_dtype_of(torch::Dtype dtype, const std::string& where);
std::string hf_dtype_name(torch::Dtype dtype);  // "float32", "bfloat16", ...

// The weight files of a checkpoint: model.safetensors[.index.json], else pytorch_model.bin[.index.json].
struct WeightFiles {
  std::vector<std::string> paths;
  std::string where;  // directory or file, for messages
  static bool exist_in(const std::string& dir);
  static WeightFiles in_dir(const std::string& dir);        // throws llava::Error when there are none
  static WeightFiles single(const std::string& path);       // .safetensors or .bin (by extension)
};

// Checkpoint name <-> model parameter name.
struct NameScheme {
  // model parameter name -> checkpoint name; "" = this format does not store it.
  std::function<std::string(const std::string&)> to_checkpoint;
  // checkpoint name -> model parameter name; "" = known but ignored (buffers like rotary inv_freq,
  // position_ids, CLIP's text tower); nullopt = not a name of this format (reported as unexpected).
  std::function<std::optional<std::string>(const std::string&)> to_model;
};

struct LoadReport {
  std::set<std::string> loaded;                  // model names filled
  std::vector<std::string> unexpected;           // "file: name" of tensors that map to no target
  std::map<std::string, std::string> file_of;    // model name -> file it came from
};

// Copies every tensor of `files` whose mapped model name is a key of `targets` into that tensor (converting
// the dtype; in parallel on the intra-op threads). Throws llava::Error naming the file and tensor on a shape
// mismatch, a non-float dtype for a float parameter, or an unreadable file. Tensors mapping to names outside
// `targets` are collected in `unexpected`.
// adopt_file_memory: a CPU target whose dtype matches the file's gets the mapped bytes as its storage
// (set_data) instead of a copy: no copy at load, and a training write copies just the pages it touches
// (the mapping is private, the file is never written; pages never written stay shared with the page cache).
// Only for freshly built targets that nothing else views (the previous storage is dropped); the file must
// not be truncated or rewritten in place while the model lives (our writers replace files by rename).
LoadReport load_weights(const WeightFiles& files, const NameScheme& scheme,
                        const std::map<std::string, torch::Tensor>& targets, bool adopt_file_memory = false);

// Throws llava::Error listing the targets (by checkpoint name) that were not loaded, and the unexpected tensors.
void check_complete(const std::map<std::string, torch::Tensor>& targets, const LoadReport& report,
                    const NameScheme& scheme, const std::string& where);

// Tensors to write (CPU, contiguous, in the output dtype), held alive until written.
struct TensorsToSave {
  std::vector<std::string> names;
  std::vector<torch::Tensor> tensors;
  std::vector<TensorToWrite> views() const;
};
TensorsToSave collect_for_save(const std::map<std::string, torch::Tensor>& params, const NameScheme& scheme,
                               std::optional<torch::Dtype> dtype);

}  // namespace llava
