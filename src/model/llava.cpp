#include "llava/model/llava.h"

#include <algorithm>

#include "llava/error.h"
#include "llava/model/lm_loss.h"
#include "llava/tokenizer.h"

namespace llava {

torch::Tensor LlavaOutput::loss() const {
  if (num_target_tokens == 0) return loss_sum * 0.0;
  return loss_sum / static_cast<double>(num_target_tokens);
}

LlavaForCausalLMImpl::LlavaForCausalLMImpl(const LlavaConfig& config) : config_(config) {
  config_.validate("LLaVA model config");
  vision_tower = register_module("vision_tower", make_vision_tower(config_.vision));
  multi_modal_projector = register_module(
      "multi_modal_projector", Projector(config_.projector_type, config_.vision.hidden_size, config_.text.hidden_size));
  language_model = register_module("language_model", LlamaForCausalLM(config_.text));
}

bool LlavaForCausalLMImpl::vision_tower_trainable() const {
  for (const auto& p : vision_tower->parameters())
    if (p.requires_grad()) return true;
  return false;
}

void LlavaForCausalLMImpl::set_fused_attention(bool on) {
  vision_tower->set_fused_attention(on);
  language_model->model->set_fused_attention(on);
}

torch::Tensor LlavaForCausalLMImpl::vision_features(const torch::Tensor& pixel_values) {
  // LLaVA runs the frozen tower under no_grad; an unfrozen one (unfreeze_mm_vision_tower) keeps its graph.
  c10::optional<torch::NoGradGuard> no_grad;
  if (!vision_tower_trainable()) no_grad.emplace();
  torch::Tensor h = vision_tower->hidden_state(pixel_values, config_.vision_feature_layer);  // [N, T, Dv]
  if (!config_.vision.has_cls_token() || config_.keeps_cls()) return h;  // SigLIP: every row is a patch
  return h.narrow(1, 1, h.size(1) - 1);
}

torch::Tensor LlavaForCausalLMImpl::image_features(const torch::Tensor& pixel_values) {
  return multi_modal_projector(vision_features(pixel_values));
}

MergedInputs LlavaForCausalLMImpl::merge_inputs(const LlavaInputs& in) {
  const torch::Tensor &input_ids = in.input_ids, &labels = in.labels, &attention_mask = in.attention_mask;
  const torch::Tensor& pixel_values = in.pixel_values;
  const std::vector<int64_t>& image_counts = in.image_counts;
  if (input_ids.dim() != 2) throw Error("model input: input_ids must be [B, T], got " + c10::str(input_ids.sizes()));
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  auto check_shape = [&](const torch::Tensor& t, const char* name) {
    if (t.defined() && (t.dim() != 2 || t.size(0) != B || t.size(1) != T))
      throw Error(std::string("model input: ") + name + " must have input_ids' shape " + c10::str(input_ids.sizes()) +
                  ", got " + c10::str(t.sizes()));
  };
  check_shape(labels, "labels");
  check_shape(attention_mask, "attention_mask");
  if (!image_counts.empty() && static_cast<int64_t>(image_counts.size()) != B)
    throw Error("model input: image_counts has " + std::to_string(image_counts.size()) + " entries for a batch of " +
                std::to_string(B));

  // Index bookkeeping on the CPU (small), one gather on the device.
  torch::Tensor ids_c = input_ids.to(torch::kCPU, torch::kLong).contiguous();
  torch::Tensor lab_c = labels.defined() ? labels.to(torch::kCPU, torch::kLong).contiguous() : torch::Tensor();
  torch::Tensor msk_c = attention_mask.defined() ? attention_mask.to(torch::kCPU).ne(0).contiguous() : torch::Tensor();
  const int64_t* ids = ids_c.data_ptr<int64_t>();
  const int64_t* lab = lab_c.defined() ? lab_c.data_ptr<int64_t>() : nullptr;
  const bool* msk = msk_c.defined() ? msk_c.data_ptr<bool>() : nullptr;

  const int64_t N = pixel_values.defined() ? pixel_values.size(0) : 0;
  const int64_t P = config_.num_image_tokens();
  const int64_t V = config_.text.vocab_size;

  // Source rows: [text tokens (M) | image rows (N*P) | one zero row]. Image rows are recorded as -(1 + row)
  // while M is still growing and resolved afterwards.
  std::vector<int64_t> text_ids;
  std::vector<std::vector<int64_t>> src(B), lbl(B);
  int64_t k = 0;  // global image counter (row-major over the batch)
  for (int64_t b = 0; b < B; ++b) {
    int64_t markers = 0;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = b * T + t;
      if (msk && !msk[i]) continue;
      const int64_t id = ids[i];
      if (id == kImageTokenIndex) {
        ++markers;
        if (k >= N)
          throw Error("model input: sample " + std::to_string(b) + " has an image marker (-200) beyond the " +
                      std::to_string(N) + " images of the batch");
        for (int64_t p = 0; p < P; ++p) {
          src[b].push_back(-(1 + k * P + p));
          lbl[b].push_back(kIgnoreIndex);
        }
        ++k;
      } else {
        if (id < 0 || id >= V)
          throw Error("model input: sample " + std::to_string(b) + " position " + std::to_string(t) + ": token id " +
                      std::to_string(id) + " outside the vocabulary [0, " + std::to_string(V) + ")");
        src[b].push_back(static_cast<int64_t>(text_ids.size()));
        text_ids.push_back(id);
        lbl[b].push_back(lab ? lab[i] : kIgnoreIndex);
      }
    }
    if (!image_counts.empty() && image_counts[b] != markers)
      throw Error("model input: sample " + std::to_string(b) + " has " + std::to_string(markers) +
                  " image markers but image_counts says " + std::to_string(image_counts[b]));
  }
  if (k != N)
    throw Error("model input: the batch has " + std::to_string(k) + " image markers (-200) but " + std::to_string(N) +
                " images");

  const int64_t M = static_cast<int64_t>(text_ids.size());
  const int64_t zero_row = M + N * P;
  MergedInputs out;
  int64_t L = 1;
  for (int64_t b = 0; b < B; ++b) {
    out.lengths.push_back(static_cast<int64_t>(src[b].size()));
    L = std::max<int64_t>(L, static_cast<int64_t>(src[b].size()));
  }
  torch::Tensor index = torch::full({B, L}, zero_row, torch::kLong);
  out.labels = torch::full({B, L}, static_cast<int64_t>(kIgnoreIndex), torch::kLong);
  auto idx_a = index.accessor<int64_t, 2>();
  auto lab_a = out.labels.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    for (size_t t = 0; t < src[b].size(); ++t) {
      const int64_t s = src[b][t];
      idx_a[b][t] = s >= 0 ? s : M + (-s - 1);
      lab_a[b][t] = lbl[b][t];
    }
  }

  auto& embed = language_model->model->embed_tokens;
  const auto device = embed->weight.device();
  const auto dtype = embed->weight.scalar_type();
  const int64_t D = config_.text.hidden_size;
  std::vector<torch::Tensor> parts;
  parts.push_back(M > 0 ? embed(torch::tensor(text_ids, torch::kLong).to(device))
                        : torch::zeros({0, D}, torch::TensorOptions().dtype(dtype).device(device)));
  if (N > 0) parts.push_back(image_features(pixel_values.to(device)).to(dtype).reshape({N * P, D}));
  parts.push_back(torch::zeros({1, D}, torch::TensorOptions().dtype(dtype).device(device)));
  torch::Tensor source = torch::cat(parts, 0);
  out.inputs_embeds = source.index_select(0, index.view({-1}).to(device)).view({B, L, D});
  return out;
}

LlavaOutput LlavaForCausalLMImpl::forward(const LlavaInputs& inputs, bool return_logits) {
  MergedInputs in = merge_inputs(inputs);
  const int64_t B = in.inputs_embeds.size(0), L = in.inputs_embeds.size(1), D = in.inputs_embeds.size(2);
  torch::Tensor hidden = language_model->model->forward(in.inputs_embeds);  // [B,L,D]; right-padded: causal only
  const auto device = hidden.device();

  LlavaOutput out;
  out.lengths = in.lengths;
  // Targets and their positions from the CPU labels: no device round trip.
  out.shift_labels = in.labels.narrow(1, 1, L - 1);  // [B, L-1]
  torch::Tensor valid = out.shift_labels.ne(kIgnoreIndex);
  out.per_sample_targets = valid.sum(1).to(torch::kLong);
  out.num_target_tokens = out.per_sample_targets.sum().item<int64_t>();
  torch::Tensor flat_valid = valid.reshape({-1}).nonzero().view({-1});  // indices into B*(L-1)
  torch::Tensor row = flat_valid.div(L - 1, "floor").to(device);
  torch::Tensor target = out.shift_labels.reshape({-1}).index_select(0, flat_valid).to(device);
  torch::Tensor h = hidden.narrow(1, 0, L - 1).reshape({-1, D}).index_select(0, flat_valid.to(device));
  TokenLosses ce = linear_cross_entropy(h, language_model->output_weight(), target);  // [n_valid]
  out.loss_sum = ce.loss_sum;
  const auto fopt = torch::TensorOptions().dtype(torch::kFloat).device(device);
  out.per_sample_loss_sum = torch::zeros({B}, fopt).index_add(0, row, ce.losses);
  out.per_sample_correct =
      torch::zeros({B}, fopt.dtype(torch::kLong)).index_add(0, row, ce.correct.to(torch::kLong));
  if (return_logits) {
    torch::NoGradGuard no_grad;
    out.logits = language_model->logits(hidden).to(torch::kFloat);  // HF upcasts logits to fp32
  }
  return out;
}

}  // namespace llava
