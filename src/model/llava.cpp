#include "llava/model/llava.h"

#include <algorithm>
#include <cmath>

#include "llava/error.h"
#include "llava/model/lm_loss.h"
#include "llava/model/param_init.h"
#include "llava/tokenizer.h"

namespace llava {

namespace {

// One image's merged block as rows of the image-feature block (tile t's patch p is row t * tokens + p;
// `newline` is image_newline's row), in llava_arch.py's order. `l` is anyres.h's layout of the image.
void append_merged_rows(const AnyresImageLayout& l, int64_t first_tile, int64_t tokens, int64_t n, PatchMerge merge,
                        int64_t newline, std::vector<int64_t>& rows) {
  const int64_t base = first_tile * tokens;
  if (merge == PatchMerge::kFlat) {  // every tile's rows, base first
    for (int64_t r = 0; r < l.num_tiles * tokens; ++r) rows.push_back(base + r);
    return;
  }
  for (int64_t p = 0; p < n * n; ++p) rows.push_back(base + p);  // the base tile
  const bool unpad = merge == PatchMerge::kSpatialUnpad;
  if (l.num_tiles == 1) {  // the shape[0] == 1 branch: base (+ image_newline when unpadding)
    if (unpad) rows.push_back(newline);
    return;
  }
  // crops viewed as [grid_h, grid_w, n, n] -> the [grid_h * n, grid_w * n] map: M[r][c] = crop (r/n, c/n)'s patch
  // (r%n, c%n); spatial_unpad keeps anyres.h's window of it and ends every kept row with image_newline
  const UnpadWindow w = unpad ? l.kept : UnpadWindow{0, l.map_rows, 0, l.map_cols};
  for (int64_t r = w.row_begin; r < w.row_end; ++r) {
    for (int64_t c = w.col_begin; c < w.col_end; ++c) {
      const int64_t tile = first_tile + 1 + (r / n) * l.grid_w + c / n;
      rows.push_back(tile * tokens + (r % n) * n + c % n);
    }
    if (unpad) rows.push_back(newline);
  }
}

}  // namespace

std::vector<ImageSize> image_sizes_from_hf(const torch::Tensor& image_sizes) {
  if (image_sizes.dim() != 2 || image_sizes.size(1) != 2)
    throw Error("image_sizes must be [N, 2] (height, width), got " + c10::str(image_sizes.sizes()));
  torch::Tensor hw = image_sizes.to(torch::kCPU, torch::kLong).contiguous();
  std::vector<ImageSize> out;
  for (int64_t i = 0; i < hw.size(0); ++i)
    out.push_back({static_cast<int>(hw[i][1].item<int64_t>()), static_cast<int>(hw[i][0].item<int64_t>())});
  return out;
}

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
  if (config_.has_image_newline()) {
    const int64_t d = config_.text.hidden_size;
    // LLaVA's initialize_vision_modules: randn(hidden) / sqrt(hidden)
    image_newline = register_parameter(
        "image_newline", init_or_empty({d}, [d] { return torch::randn({d}) / std::sqrt(static_cast<double>(d)); }));
  }
}

void LlavaForCausalLMImpl::add_image_newline(uint64_t seed) {
  const int64_t d = config_.text.hidden_size;
  auto gen = at::detail::createCPUGenerator(seed);
  torch::Tensor init = at::normal(0.0, 1.0, {d}, gen) / std::sqrt(static_cast<double>(d));
  const auto& like = language_model->model->embed_tokens->weight;
  image_newline = register_parameter("image_newline", init.to(like.device(), like.scalar_type()));
}

std::vector<std::string> LlavaForCausalLMImpl::configure_images(const std::optional<AnyresConfig>& anyres,
                                                                const std::string& aspect, uint64_t seed) {
  std::vector<std::string> notes;
  LlavaConfig c = config_;
  if (anyres || !config_.image_aspect_ratio.empty()) c.image_aspect_ratio = aspect;  // a v1.5 config without one stays so
  if (anyres) {
    const AnyresConfig mine = config_.anyres_config();
    if (anyres->tile_size != mine.tile_size || anyres->patches_per_side != mine.patches_per_side ||
        anyres->tile_positions != mine.tile_positions)
      throw Error("anyres: the data side tiles " + std::to_string(anyres->tile_size) + " px with " +
                  std::to_string(anyres->patches_per_side) + " patches per side and " +
                  std::to_string(anyres->tile_positions) + " positions per tile, the model's vision tower has " +
                  std::to_string(mine.tile_size) + " / " + std::to_string(mine.patches_per_side) + " / " +
                  std::to_string(mine.tile_positions));
    c.image_aspect_ratio = "anyres";
    c.image_grid_pinpoints = anyres->pinpoints;
    c.mm_patch_merge_type = patch_merge_name(anyres->merge);
  }
  c.validate("model image settings");
  const bool add_newline = c.has_image_newline() && !image_newline.defined();
  if (c.anyres() != config_.anyres() || c.mm_patch_merge_type != config_.mm_patch_merge_type ||
      c.image_grid_pinpoints != config_.image_grid_pinpoints)
    notes.push_back("image layout: image_aspect_ratio " + (c.image_aspect_ratio.empty() ? "square" : c.image_aspect_ratio) +
                    ", mm_patch_merge_type " + c.mm_patch_merge_type +
                    (c.anyres() ? ", image_grid_pinpoints " + pinpoints_text(c.image_grid_pinpoints) : std::string()) +
                    " (config.json had " + (config_.image_aspect_ratio.empty() ? "none" : config_.image_aspect_ratio) +
                    ", " + config_.mm_patch_merge_type + ")");
  config_ = c;
  if (add_newline) {
    add_image_newline(seed);
    notes.push_back("image_newline freshly initialised (N(0, 1/hidden), seed " + std::to_string(seed) + ")");
  }
  return notes;
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

LlavaForCausalLMImpl::ImageRows LlavaForCausalLMImpl::image_rows(const LlavaInputs& in) const {
  ImageRows out;
  const int64_t tiles = in.pixel_values.defined() ? in.pixel_values.size(0) : 0;
  const int64_t tokens = config_.num_image_tokens();
  out.feature_rows = tiles * tokens;
  out.offsets.push_back(0);
  if (!in.anyres()) {  // one tile per image: its patch rows
    for (int64_t k = 0; k < tiles; ++k) {
      for (int64_t p = 0; p < tokens; ++p) out.rows.push_back(k * tokens + p);
      out.offsets.push_back(static_cast<int64_t>(out.rows.size()));
    }
    return out;
  }
  if (!config_.anyres())
    throw Error("model input: the batch has anyres tiles but the model's image_aspect_ratio is '" +
                config_.image_aspect_ratio + "' (configure_images sets it from the data options)");
  if (in.image_sizes.size() != in.image_tiles.size())
    throw Error("model input: " + std::to_string(in.image_tiles.size()) + " image_tiles entries but " +
                std::to_string(in.image_sizes.size()) + " image_sizes");
  const AnyresConfig geometry = config_.anyres_config();
  const int64_t newline = out.feature_rows;
  int64_t first_tile = 0;
  for (size_t k = 0; k < in.image_tiles.size(); ++k) {
    const int64_t p = in.image_tiles[k];
    // the reference recomputes the grid from image_sizes; a P of 1 is the base tile alone (the tile budget)
    const AnyresImageLayout l = anyres_image_layout(in.image_sizes[k], geometry, /*base_only=*/p == 1);
    if (l.num_tiles != p)
      throw Error("model input: image " + std::to_string(k) + " (" + std::to_string(in.image_sizes[k].width) + "x" +
                  std::to_string(in.image_sizes[k].height) + ") has " + std::to_string(p) +
                  " tiles, the model's image_grid_pinpoints give it " + std::to_string(l.num_tiles));
    append_merged_rows(l, first_tile, tokens, geometry.patches_per_side, geometry.merge, newline, out.rows);
    const int64_t merged = static_cast<int64_t>(out.rows.size()) - out.offsets.back();
    if (merged != l.positions)
      throw std::logic_error("anyres merge: " + std::to_string(merged) + " rows for " + std::to_string(l.positions) +
                             " positions");
    out.offsets.push_back(static_cast<int64_t>(out.rows.size()));
    first_tile += p;
  }
  if (first_tile != tiles)
    throw Error("model input: image_tiles add up to " + std::to_string(first_tile) + " tiles but pixel_values has " +
                std::to_string(tiles));
  out.uses_newline = geometry.merge == PatchMerge::kSpatialUnpad;
  if (out.uses_newline && !image_newline.defined())
    throw Error("model input: mm_patch_merge_type spatial_unpad needs the model's image_newline, which it lacks");
  return out;
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

  const ImageRows images = image_rows(in);
  const int64_t N = static_cast<int64_t>(images.offsets.size()) - 1;  // images of the batch
  const int64_t V = config_.text.vocab_size;

  // Source rows: [text tokens (M) | image feature rows (+ image_newline) | one zero row]. Image rows are recorded
  // as -(1 + row) while M is still growing and resolved afterwards.
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
        for (int64_t r = images.offsets[k]; r < images.offsets[k + 1]; ++r) {
          src[b].push_back(-(1 + images.rows[r]));
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
  const int64_t image_block = images.feature_rows + (images.uses_newline ? 1 : 0);
  const int64_t zero_row = M + image_block;
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
  // every tile of the batch through the vision tower and projector at once: [tiles, tokens, D] -> rows
  if (images.feature_rows > 0)
    parts.push_back(image_features(pixel_values.to(device)).to(dtype).reshape({images.feature_rows, D}));
  if (images.uses_newline) parts.push_back(image_newline.to(dtype).view({1, D}));
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
