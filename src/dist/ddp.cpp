// broadcast_parameters: rank 0's weights to every rank (ddp.h).
#include "llava/dist/ddp.h"

#include <torch/torch.h>


namespace llava::dist {

void broadcast_parameters(ProcessGroup& pg, const std::vector<at::Tensor>& params, int root) {
  constexpr size_t kChunkBytes = 64u << 20;
  torch::NoGradGuard no_grad;
  size_t i = 0;
  while (i < params.size()) {
    // params[i, j): one dtype, at most kChunkBytes (or a single larger tensor)
    size_t j = i, bytes = 0;
    std::vector<at::Tensor> chunk;
    while (j < params.size() && params[j].scalar_type() == params[i].scalar_type()) {
      size_t b = static_cast<size_t>(params[j].numel()) * params[j].element_size();
      if (!chunk.empty() && bytes + b > kChunkBytes) break;
      chunk.push_back(params[j].detach());
      bytes += b;
      ++j;
    }
    std::vector<at::Tensor> flat;
    for (const auto& t : chunk) flat.push_back(t.reshape({-1}));
    at::Tensor buf = flat.size() == 1 ? flat[0].contiguous().clone() : at::cat(flat);
    pg.broadcast(buf, root);
    int64_t off = 0;
    for (auto& t : chunk) {
      t.copy_(buf.narrow(0, off, t.numel()).view(t.sizes()));
      off += t.numel();
    }
    i = j;
  }
}

}  // namespace llava::dist
