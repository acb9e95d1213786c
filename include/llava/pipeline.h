#pragma once
// Builds the data side of a run from the options: tokenizer, template, image geometry and
// preprocessing, dataset index. Reads only small JSON files of the model directories (no torch).
#include <memory>
#include <optional>
#include <string>

#include "llava/dataset.h"
#include "llava/example.h"
#include "llava/model/config.h"
#include "llava/options.h"
#include "llava/tokenizer.h"

namespace llava {

struct VisionFiles {
  std::string config_dir;     // where the preprocessor config came from (for messages)
  int image_size = 336, patch_size = 14;
  int positions = 576;        // LLM positions one image (tile) takes: patches, +1 when CLS is kept
  ImageProcessorConfig processor;
};

// The model flags given on the command line or in YAML (unset ones stay empty: the directory's own apply).
ConfigOverrides config_overrides(const Options& options);

// The vision side of the data: image size, patch size and positions per image from THE model configuration
// (resolve_llava_config, which load_llava builds the model from), and the preprocessor from the
// preprocessor_config.json beside the tower (--vision_tower for an LLM directory or an original LLaVA
// checkpoint, else an original LLaVA's mm_vision_tower) or in the model directory (an HF LLaVA directory:
// --vision_tower is ignored, as the model ignores it), else the tower family's processor defaults (CLIP's or
// SigLIP's) for the image size.
VisionFiles find_vision_files(const Options& options);

struct DataPipeline {
  std::shared_ptr<const Tokenizer> tokenizer_ptr;  // for users that outlive the pipeline (generation)
  const Tokenizer& tokenizer;                      // *tokenizer_ptr
  ExampleOptions example;  // points at `tokenizer`: keep the pipeline where it was made (not copied)
  std::optional<Dataset> dataset;
  DataPipeline(const DataPipeline&) = delete;
  DataPipeline& operator=(const DataPipeline&) = delete;
  explicit DataPipeline(std::shared_ptr<const Tokenizer> tok) : tokenizer_ptr(std::move(tok)), tokenizer(*tokenizer_ptr) {}
};

// How --data_path is opened: the index cache folder (--data_cache_dir; else <output_dir>/.data_cache when
// there is an output dir; "none", or neither: no cache, the file is scanned at each start), the seed of
// a mixture's random:N%, build_cache true.
DatasetOpenOptions dataset_open_options(const Options& options);

// needs_dataset: also open --data_path (error when missing), with `open` (default dataset_open_options).
std::unique_ptr<DataPipeline> make_data_pipeline(const Options& options, bool needs_dataset,
                                                 const DatasetOpenOptions* open = nullptr);

}  // namespace llava
