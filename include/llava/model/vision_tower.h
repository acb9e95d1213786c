#pragma once
// What LLaVA needs from its vision tower, whichever family it is (CLIP: clip.h, SigLIP: siglip.h). The tower
// is registered as the LLaVA model's "vision_tower" child, so its parameters keep the HF names
// "vision_tower.vision_model.*" of either family.
#include <torch/torch.h>

#include <memory>

#include "llava/model/config.h"

namespace llava {

class VisionTowerImpl : public torch::nn::Module {
 public:
  // [N,C,H,W] (any float dtype; cast to the tower's) -> hidden_states[layer] of HF's output_hidden_states,
  // [N, T, D] with T = the tower's tokens (CLIP: CLS + patches, SigLIP: patches). 0 = the embeddings (CLIP:
  // after pre_layrnorm), k = after encoder layer k, negative counts from the end. Only the layers needed run.
  virtual torch::Tensor hidden_state(const torch::Tensor& pixel_values, int64_t layer) = 0;
  virtual void set_fused_attention(bool on) = 0;
  virtual const ClipVisionConfig& config() const = 0;
};

// The tower config.tower names (CLIP or SigLIP), with the default random init unless a SkipParameterInit
// is alive (param_init.h).
std::shared_ptr<VisionTowerImpl> make_vision_tower(const ClipVisionConfig& config);

// hidden_states index -> number of encoder layers to run (`layer` counted as above); throws llava::Error
// naming the tower when the state does not exist.
int64_t vision_layers_to_run(int64_t layer, int64_t num_layers, const char* tower);

}  // namespace llava
