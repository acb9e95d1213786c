#pragma once
// Builds the data side of a run from the options: tokenizer, template, image geometry and
// preprocessing, dataset index. Reads only small JSON files of the model directories (no torch).
#include <memory>
#include <optional>
#include <string>

#include "llava/dataset.h"
#include "llava/example.h"
#include "llava/options.h"
#include "llava/tokenizer.h"

namespace llava {

struct VisionFiles {
  std::string config_dir;     // where the vision config came from (for messages)
  int image_size = 336, patch_size = 14;
  bool has_cls_token = true;  // CLIP; SigLIP has none (its image takes exactly its patches)
  ImageProcessorConfig processor;
};

// Finds the vision tower's geometry and preprocessor for the model sources LLaVA users have:
// an HF LLaVA dir (vision_config), an original-LLaVA dir (mm_vision_tower), or --vision_tower (CLIP or
// SigLIP). Without a preprocessor_config.json the tower family's processor defaults apply.
VisionFiles find_vision_files(const std::string& model_dir, const std::string& vision_tower_dir);

struct DataPipeline {
  std::shared_ptr<const Tokenizer> tokenizer_ptr;  // for users that outlive the pipeline (generation)
  const Tokenizer& tokenizer;                      // *tokenizer_ptr
  ExampleOptions example;  // points at `tokenizer`: keep the pipeline where it was made (not copied)
  std::optional<Dataset> dataset;
  DataPipeline(const DataPipeline&) = delete;
  DataPipeline& operator=(const DataPipeline&) = delete;
  explicit DataPipeline(std::shared_ptr<const Tokenizer> tok) : tokenizer_ptr(std::move(tok)), tokenizer(*tokenizer_ptr) {}
};

// needs_dataset: also open --data_path (error when missing).
std::unique_ptr<DataPipeline> make_data_pipeline(const Options& options, bool needs_dataset);

}  // namespace llava
