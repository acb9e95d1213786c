#pragma once
// AdamW as torch.optim.AdamW (1.13 single-tensor path: decoupled decay, bias-corrected moments), with
// fp32 master weights for low-precision parameters.
//
// Mixed precision (--bf16): the model's parameters are bf16 and run forward/backward in bf16. For each
// trainable bf16 parameter the optimizer keeps an fp32 master copy and an fp32 gradient buffer.
// accumulate_grads() (after every micro-batch's backward) adds the bf16 .grad into the fp32 buffer and frees
// it, so accumulation over micro-batches happens in fp32; step() updates the fp32 master and moments and
// casts the master back into the bf16 parameter. fp32 parameters are their own master and keep their
// gradient in .grad, as in plain PyTorch.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace llava {

struct AdamWOptions {
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
};

class AdamW {
 public:
  explicit AdamW(AdamWOptions options) : opt_(options) {}

  // One trainable tensor with its own base lr and weight decay (LLaVA's groups: decay/no-decay x
  // projector/other). Names identify state in checkpoints.
  void add_param(const std::string& name, torch::Tensor param, double base_lr, double weight_decay);

  void accumulate_grads();                  // after each backward (no-op for fp32 parameters)
  std::vector<torch::Tensor> grads() const;  // fp32 gradients, undefined where a tensor got none
  void zero_grad();
  // One update with lr = base_lr * lr_multiplier for every tensor. A tensor without a gradient is updated as
  // with a zero gradient (its moments decay): LLaVA feeds a dummy image to text-only batches so the projector
  // always has a (zero) gradient, and the fixtures' Adam state advances for every tensor every step.
  void step(double lr_multiplier);

  int64_t step_count() const { return step_; }
  size_t size() const { return entries_.size(); }
  int64_t numel() const;
  // fp32 master copies (empty for fp32 models), for tests and memory reports.
  int64_t master_numel() const;

  // Checkpoint state: DIR/optimizer.exp_avg.safetensors, optimizer.exp_avg_sq.safetensors, and with
  // separate masters optimizer.master.safetensors (one file per kind keeps the host copy at one kind's size),
  // plus optimizer.json (step count, hyper-parameters, tensor names).
  void save(const std::string& dir) const;
  // Throws llava::Error naming the file and tensor when the checkpoint does not hold this run's tensors.
  void load(const std::string& dir);

 private:
  struct Entry {
    std::string name;
    torch::Tensor param;      // the model's tensor
    torch::Tensor master;     // fp32; the same tensor as param when param is fp32
    torch::Tensor grad_fp32;  // bf16/fp16 params only: accumulated fp32 gradient
    torch::Tensor exp_avg, exp_avg_sq;
    double base_lr = 0, weight_decay = 0;
    bool separate_master() const { return grad_fp32.defined(); }
  };
  AdamWOptions opt_;
  std::vector<Entry> entries_;
  int64_t step_ = 0;
};

// sqrt(sum of squares) over all defined tensors, in fp32 per tensor like torch.nn.utils.clip_grad_norm_
// (norm of the per-tensor norms), returned as a double.
double global_grad_norm(const std::vector<torch::Tensor>& grads);
// Multiplies every defined gradient in place.
void scale_grads(const std::vector<torch::Tensor>& grads, double factor);

}  // namespace llava
