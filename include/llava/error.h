#pragma once
// llava::Error: the one exception type for bad input, bad configuration and bad checkpoints.
// Messages say what and where (sample index and id, file, tensor name) so the CLI can print them as-is.
#include <stdexcept>
#include <string>

namespace llava {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// "sample 3 (id 's3'): <reason>": the prefix every per-sample error uses.
std::string sample_context(long index, const std::string& id);

}  // namespace llava
