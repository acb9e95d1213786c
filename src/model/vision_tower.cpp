#include "llava/model/vision_tower.h"

#include "llava/error.h"
#include "llava/model/clip.h"
#include "llava/model/siglip.h"

namespace llava {

std::shared_ptr<VisionTowerImpl> make_vision_tower(const ClipVisionConfig& config) {
  if (config.is_siglip()) return std::make_shared<SiglipVisionModelImpl>(config);
  return std::make_shared<ClipVisionModelImpl>(config);
}

int64_t vision_layers_to_run(int64_t layer, int64_t num_layers, const char* tower) {
  const int64_t idx = layer < 0 ? num_layers + 1 + layer : layer;
  if (idx < 0 || idx > num_layers)
    throw Error(std::string(tower) + ": hidden state " + std::to_string(layer) + " does not exist (" +
                std::to_string(num_layers) + " layers)");
  return idx;
}

}  // namespace llava
