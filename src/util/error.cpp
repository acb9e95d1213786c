#include "llava/error.h"

namespace llava {

std::string sample_context(long index, const std::string& id) {
  return "sample " + std::to_string(index) + " (id '" + id + "')";
}

}  // namespace llava
