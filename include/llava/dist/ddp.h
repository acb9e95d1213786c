#pragma once
// Data parallelism's one-off: every rank starts from rank 0's weights. (The per-step gradient reduction is
// GradReducer's, dist/grad_reducer.h, driven by the trainer's Optimizer.)
#include <ATen/core/Tensor.h>

#include <vector>

#include "llava/dist/process_group.h"

namespace llava::dist {

// Copies root's values of `params` to every rank (coalesced by dtype, in chunks of at most 64 MB).
void broadcast_parameters(ProcessGroup& pg, const std::vector<at::Tensor>& params, int root = 0);

}  // namespace llava::dist
