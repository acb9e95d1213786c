#pragma once
// Builds the data side of a run from the options: tokenizer, template, image geometry and
// preprocessing, dataset index. Reads only small JSON files of the model directories (no torch).
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
  ImageProcessorConfig processor;
};

// Finds the vision tower's geometry and preprocessor for the model sources LLaVA users have:
// an HF LLaVA dir (vision_config), an original-LLaVA dir (mm_vision_tower), or --vision_tower.
VisionFiles find_vision_files(const std::string& model_dir, const std::string& vision_tower_dir);

struct DataPipeline {
  LlamaTokenizer tokenizer;
  ExampleOptions example;  // points at `tokenizer`: keep the pipeline where it was made (not copied)
  std::optional<Dataset> dataset;
  DataPipeline(const DataPipeline&) = delete;
  DataPipeline& operator=(const DataPipeline&) = delete;
  DataPipeline(LlamaTokenizer tok) : tokenizer(std::move(tok)) {}
};

// How --data_path is opened: the index cache folder (--data_cache_dir; else <output_dir>/.data_cache when
// there is an output dir; "none", or neither: no cache, the file is scanned at each start), the seed of
// a mixture's random:N%, build_cache true.
DatasetOpenOptions dataset_open_options(const Options& options);

// needs_dataset: also open --data_path (error when missing), with `open` (default dataset_open_options).
std::unique_ptr<DataPipeline> make_data_pipeline(const Options& options, bool needs_dataset,
                                                 const DatasetOpenOptions* open = nullptr);

}  // namespace llava
