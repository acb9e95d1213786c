// Memory estimate per rank for llava-train plan: parameter counts from the configs, ZeRO sharding as
// ZeroOptimizer / GradientSync implement it, activations as our LLaVA model's autograd graph saves them.
#include "llava/dist/plan.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace llava::dist {

// ---------------------------------------------------------------- parameters

int64_t PlanModel::llm_params() const {
  const int64_t q = heads * head_dim, kv = kv_heads * head_dim;
  const int64_t layer = hidden * q + 2 * hidden * kv + q * hidden  // q, k, v, o
                        + (qkv_bias ? q + 2 * kv : 0)               // Qwen2's q, k, v biases
                        + 3 * hidden * intermediate                // gate, up, down
                        + 2 * hidden;                              // two RMSNorms
  return vocab * hidden * (tie_embeddings ? 1 : 2) + layers * layer + hidden;
}

int64_t PlanModel::vision_params() const {
  const int64_t patches = image_tokens();
  const int64_t layer = 4 * (v_hidden * v_hidden + v_hidden)                                  // q, k, v, out
                        + v_hidden * v_intermediate + v_intermediate + v_intermediate * v_hidden + v_hidden  // fc1, fc2
                        + 4 * v_hidden;                                                       // 2 LayerNorms
  const int64_t mlp = v_hidden * v_intermediate + v_intermediate + v_intermediate * v_hidden + v_hidden;
  if (siglip) {
    // patch (+ bias), positions (no CLS), layers, post LayerNorm; the pooling head: probe, in/out
    // projections, LayerNorm, MLP
    const int64_t head = siglip_head ? v_hidden + 3 * v_hidden * v_hidden + 3 * v_hidden + v_hidden * v_hidden +
                                           v_hidden + 2 * v_hidden + mlp
                                     : 0;
    return 3 * patch_size * patch_size * v_hidden + v_hidden + patches * v_hidden + v_layers * layer + 2 * v_hidden +
           head;
  }
  return 3 * patch_size * patch_size * v_hidden + v_hidden + (patches + 1) * v_hidden  // patch, CLS, positions
         + 2 * v_hidden + v_layers * layer + 2 * v_hidden;                           // pre/post LayerNorm
}

int64_t PlanModel::projector_params() const {
  if (projector_linears <= 0) return 0;
  return v_hidden * hidden + hidden + (projector_linears - 1) * (hidden * hidden + hidden);
}

int64_t PlanModel::lora_params(int64_t r) const {
  const int64_t q = heads * head_dim, kv = kv_heads * head_dim;
  const int64_t per_layer = r * ((hidden + q) + 2 * (hidden + kv) + (q + hidden) + 3 * (hidden + intermediate));
  return layers * per_layer;
}

namespace {

PlanModel llama_like(const std::string& name, int64_t hidden, int64_t inter, int64_t layers, int64_t heads) {
  PlanModel m;
  m.name = name;
  m.hidden = hidden;
  m.intermediate = inter;
  m.layers = layers;
  m.heads = m.kv_heads = heads;
  m.head_dim = hidden / heads;
  return m;
}

std::string lower_basename(const std::string& name) {
  std::string s = name;
  while (!s.empty() && s.back() == '/') s.pop_back();
  size_t slash = s.rfind('/');
  if (slash != std::string::npos) s = s.substr(slash + 1);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// SigLIP-so400m-patch14-384 as LLaVA-NeXT-Interleave uses it: 26 of its 27 layers, no head.
void set_siglip_so400m(PlanModel& m) {
  m.siglip = true;
  m.siglip_head = false;
  m.v_hidden = 1152;
  m.v_intermediate = 4304;
  m.v_layers = 26;
  m.v_heads = 16;
  m.image_size = 384;
  m.patch_size = 14;
}

}  // namespace

std::vector<std::string> plan_preset_names() {
  return {"llava-v1.5-7b",   "llava-v1.5-13b",  "llava-v1.6-vicuna-7b", "llava-v1.6-vicuna-13b",
          "llava-v1.6-mistral-7b", "llava-next-interleave-qwen-7b", "llava-next-interleave-qwen-0.5b",
          "vicuna-7b-v1.5", "vicuna-13b-v1.5", "llama-2-7b", "llama-2-13b", "mistral-7b-instruct-v0.2"};
}

namespace {

// Mistral-7B (v0.1 / v0.2): GQA with 8 KV heads, a wider MLP.
PlanModel mistral_7b(const std::string& name) {
  PlanModel m = llama_like(name, 4096, 14336, 32, 32);
  m.kv_heads = 8;
  return m;
}

// LLaVA-1.6 at 336 px, pinpoints [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008)]: the 2 x 2 grid
// has the most tiles (1 + 4) and positions (576 + 48 rows x 49), what anyres_max_image_positions gives.
PlanModel with_llava_1_6_anyres(PlanModel m) {
  m.tiles_per_image = 5;
  m.positions_per_image = 2928;
  return m;
}

}  // namespace

bool plan_preset(const std::string& name, PlanModel& out) {
  const std::string n = lower_basename(name);
  // LLaVA-1.5 = Vicuna v1.5 (LLaMA-2 shapes) + CLIP ViT-L/14-336 + mlp2x_gelu: the PlanModel defaults.
  auto seven = [](const std::string& nm) { return llama_like(nm, 4096, 11008, 32, 32); };
  auto thirteen = [](const std::string& nm) { return llama_like(nm, 5120, 13824, 40, 40); };
  if (n == "llava-v1.5-7b" || n == "vicuna-7b-v1.5" || n == "llama-2-7b" || n == "llama-2-7b-hf" ||
      n == "llava-1.5-7b-hf") {
    out = seven(n);
    return true;
  }
  if (n == "llava-v1.5-13b" || n == "vicuna-13b-v1.5" || n == "llama-2-13b" || n == "llama-2-13b-hf" ||
      n == "llava-1.5-13b-hf") {
    out = thirteen(n);
    return true;
  }
  // LLaVA-NeXT-Interleave: Qwen1.5-7B-Chat / Qwen1.5-0.5B-Chat (q/k/v biases, MHA; 0.5B ties its embeddings)
  if (n == "llava-next-interleave-qwen-7b" || n == "llava-interleave-qwen-7b-hf") {
    out = llama_like(n, 4096, 11008, 32, 32);
    out.vocab = 151936;
    out.qkv_bias = true;
    set_siglip_so400m(out);
    return true;
  }
  if (n == "llava-next-interleave-qwen-0.5b" || n == "llava-interleave-qwen-0.5b-hf") {
    out = llama_like(n, 1024, 2816, 24, 16);
    out.vocab = 151936;
    out.qkv_bias = true;
    out.tie_embeddings = true;
    set_siglip_so400m(out);
    return true;
  }
  if (n == "mistral-7b-instruct-v0.2" || n == "mistral-7b-v0.1") {
    out = mistral_7b(n);
    return true;
  }
  if (n == "llava-v1.6-vicuna-7b" || n == "llava-v1.6-vicuna-13b" || n == "llava-v1.6-mistral-7b" ||
      n == "llava-v1.6-vicuna-7b-hf" || n == "llava-v1.6-mistral-7b-hf") {
    out = with_llava_1_6_anyres(n.find("mistral") != std::string::npos ? mistral_7b(n)
                                : n.find("13b") != std::string::npos  ? thirteen(n)
                                                                       : seven(n));
    return true;
  }
  return false;
}

ParamCounts count_params(const PlanModel& m, const PlanSettings& s) {
  ParamCounts c;
  c.llm = m.llm_params();
  c.vision = m.vision_params();
  c.projector = m.projector_params();
  c.lora = s.lora_enable ? m.lora_params(s.lora_r) : 0;
  c.total = c.llm + c.vision + c.projector + c.lora;
  // LLaVA's train.py: which parts require grad.
  std::vector<std::string> what;
  if (s.tune_mm_mlp_adapter) {
    c.trainable = c.projector;
    what.push_back("projector");
  } else {
    if (s.lora_enable) {
      c.trainable += c.lora;
      what.push_back("LoRA");
    } else if (!s.freeze_backbone) {
      c.trainable += c.llm;
      what.push_back("LLM");
    }
    if (!s.freeze_mm_mlp_adapter) {
      c.trainable += c.projector;
      what.push_back("projector");
    }
    if (s.unfreeze_mm_vision_tower) {
      c.trainable += c.vision;
      what.push_back("vision tower");
    }
  }
  for (size_t i = 0; i < what.size(); ++i) c.trainable_what += (i ? " + " : "") + what[i];
  if (what.empty()) c.trainable_what = "nothing";
  return c;
}

// ---------------------------------------------------------------- memory
//
// Bytes per rank. d = 2 (bf16) or 4 (fp32) bytes per weight/gradient/activation element; Pt = trainable
// parameters, P = all parameters, W = world size, S = W for ZeRO 1/2 and 1 for stage 0.
//   weights  P * d                                   (every rank holds the whole model)
//   grads    stage 0/1: Pt * d                       (the .grad tensors are the all-reduce bucket buffers)
//            stage 2:   4 * Pt / W                   (fp32 accumulator of this rank's part)
//                       + 3 buckets * d              (one filling, two in flight)
//                       + Pt * d if gradient_accumulation_steps > 1 (local accumulation between syncs)
//   master   4 * Pt / S                              (fp32 master weights: bf16, or ZeroOptimizer, which keeps them
//                                                     even for fp32; none for one fp32 process at stage 0)
//   adam     8 * Pt / S                              (exp_avg + exp_avg_sq, fp32)
//   buffers  1 GiB runtime (CUDA context, allocator slack) + AdamW fp32 temporaries (4 x min(2^24, Pt/S) x 4)
//            + ZeRO 1/2 parameter all-gather (2 buckets, d)
//   activations, N = batch * seq tokens per micro-batch, per LLaMA layer and token (what autograd saves):
//     A_lin  = 2 (d + u) h            two RMSNorm inputs (+ u = 4: their fp32 upcast, bf16 only)
//            + 2 d h                  the normalised outputs (inputs of q/k/v and gate/up)
//            + d (q_dim + 2 kv_dim)   q and k after RoPE, v
//            + d q_dim                attention output (o_proj input)
//            + 4 d i                  gate, up, silu(gate), silu(gate) * up (down_proj input)
//     A_attn = fused: 4 a             (logsumexp; flash / memory-efficient SDPA)
//              eager: a T (4 + d)     (fp32 softmax output + probabilities in d, per head and key)
//     layer  = N (A_lin + A_attn)
//     without checkpointing: L * layer saved, + one layer of gradients in flight during backward
//     with checkpointing:    L * N d h (layer inputs) + 2 * layer (the recomputed layer + its gradients)
//     head: N V 4 saved (log-softmax output, fp32; the loss takes supervised tokens only, so this is a
//           bound) + final norm N h (d + u); its backward needs N V 8 more (a transient, not at the same time
//           as a layer's: the larger of the two counts)
//     projector: B t P d (v_hidden + 2 h (linears - 1)), P image tokens per tile, t tiles per image (anyres;
//           1 otherwise), one image per sample
//     vision tower (only when trained, not checkpointed): v_layers * B t (P+1) * the same A_lin/A_attn with
//           CLIP's sizes (LayerNorm instead of RMSNorm, no upcast, fc1 + GELU in place of gate/up)
MemoryEstimate estimate_memory(const PlanModel& m, const PlanSettings& s, int zero_stage, bool ckpt) {
  const ParamCounts c = count_params(m, s);
  const double d = s.bf16 ? 2.0 : 4.0, u = s.bf16 ? 4.0 : 0.0;
  const double W = std::max(1, s.world_size);
  const double S = zero_stage >= 1 && s.world_size > 1 ? W : 1.0;
  const double Pt = static_cast<double>(c.trainable), P = static_cast<double>(c.total);
  // the largest single trainable tensor decides the size of its bucket (embeddings, lm_head)
  double largest = 0;
  if (c.trainable > 0) {
    if (c.trainable_what.find("LLM") != std::string::npos) largest = static_cast<double>(m.vocab) * m.hidden;
    else largest = std::max<double>(static_cast<double>(m.hidden) * m.hidden, static_cast<double>(m.v_hidden) * m.hidden);
  }
  const double bucket = std::max<double>(static_cast<double>(s.bucket_bytes), largest * d);

  MemoryEstimate e;
  e.weights = P * d;
  if (zero_stage <= 1 || s.world_size <= 1) {
    e.grads = Pt * d;
  } else {
    e.grads = 4.0 * Pt / W + 3.0 * bucket + (s.gradient_accumulation_steps > 1 ? Pt * d : 0.0);
  }
  // fp32 masters exist for bf16 weights, and in ZeroOptimizer (several ranks or --zero_stage 1/2) even for fp32;
  // the single-process fp32 AdamW updates the parameters themselves.
  const bool separate_master = s.bf16 || s.world_size > 1 || zero_stage != 0;
  e.master = separate_master ? 4.0 * Pt / S : 0.0;
  e.adam = 8.0 * Pt / S;
  e.buffers = 1024.0 * 1024 * 1024 + 4.0 * 4.0 * std::min(16777216.0, Pt / S);
  if (S > 1) e.buffers += 2.0 * bucket * (1.0 + 1.0 / W);

  // activations
  const double N = static_cast<double>(s.batch) * s.seq, h = m.hidden, i = m.intermediate;
  const double qd = static_cast<double>(m.heads) * m.head_dim, kvd = static_cast<double>(m.kv_heads) * m.head_dim;
  const double a = m.heads, T = s.seq, V = m.vocab, L = m.layers;
  const double a_lin = 2 * (d + u) * h + 2 * d * h + d * (qd + 2 * kvd) + d * qd + 4 * d * i;
  const double a_attn = s.fused_attention ? 4 * a : a * T * (4 + d);
  const double layer = N * (a_lin + a_attn);
  const double head_saved = N * V * 4 + N * h * (d + u), head_transient = N * V * 8;
  double act = ckpt ? L * N * d * h + head_saved + std::max(2 * layer, head_transient)
                    : L * layer + head_saved + std::max(layer, head_transient);
  const double Pimg = static_cast<double>(m.image_tokens()), B = static_cast<double>(s.batch);
  const double tiles = static_cast<double>(std::max<int64_t>(m.tiles_per_image, 1));
  act += B * tiles * Pimg * d * (m.v_hidden + 2.0 * h * std::max<int64_t>(m.projector_linears - 1, 0));
  if (s.unfreeze_mm_vision_tower && !s.tune_mm_mlp_adapter) {
    const double vh = m.v_hidden, vi = m.v_intermediate, Tv = Pimg + 1;
    const double v_lin = 2 * 2 * d * vh + d * 3 * vh + d * vh + 2 * d * vi;
    const double v_attn = s.fused_attention ? 4.0 * m.v_heads : m.v_heads * Tv * (4 + d);
    act += m.v_layers * B * tiles * Tv * (v_lin + v_attn);
  }
  e.activations = act;
  return e;
}

// ---------------------------------------------------------------- report

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string billions(int64_t n) {
  if (n >= 100000000) return fmt("%.2f B", static_cast<double>(n) / 1e9);
  if (n >= 100000) return fmt("%.2f M", static_cast<double>(n) / 1e6);
  return std::to_string(n);
}

}  // namespace

std::string plan_report(const PlanModel& m, const PlanSettings& s, double gpu_gib) {
  const ParamCounts c = count_params(m, s);
  const double GiB = 1024.0 * 1024 * 1024;
  std::ostringstream o;
  o << "model: " << m.name << " (LLM " << m.layers << " x " << m.hidden << ", ffn " << m.intermediate << ", heads "
    << m.heads << "/" << m.kv_heads << ", vocab " << m.vocab << "; vision " << m.v_layers << " x " << m.v_hidden
    << " @ " << m.image_size << "/" << m.patch_size << " = " << m.image_tokens() << " tokens per "
    << (m.tiles_per_image > 1 ? "tile" : "image") << "; projector " << m.projector_linears << " linear"
    << (m.projector_linears == 1 ? "" : "s") << ")\n";
  if (m.tiles_per_image > 1)
    o << "anyres: up to " << m.tiles_per_image << " tiles and " << m.image_positions()
      << " LLM positions per image (within model_max_length)"
      << (s.seq < m.image_positions() ? "; model_max_length " + std::to_string(s.seq) +
                                            " is shorter than one such image: raise it or set --max_tiles_per_sample"
                                      : std::string())
      << "\n";
  o << "parameters: LLM " << billions(c.llm) << ", vision " << billions(c.vision) << ", projector "
    << billions(c.projector);
  if (c.lora) o << ", LoRA " << billions(c.lora);
  o << " = " << billions(c.total) << "; trainable " << billions(c.trainable) << " (" << c.trainable_what << ")\n";
  o << "run: world_size " << s.world_size << ", per_device_train_batch_size " << s.batch << ", model_max_length "
    << s.seq << " (" << s.batch * s.seq << " tokens per micro-batch), gradient_accumulation_steps "
    << s.gradient_accumulation_steps << ", " << (s.bf16 ? "bf16" : "fp32") << ", one image per sample\n";
  o << "attention: " << (s.fused_attention ? "fused SDPA (LibTorch >= 2.0 builds)" : "eager (LibTorch 1.13 builds)")
    << "; column '" << (s.fused_attention ? "eager" : "fused") << "': the total with "
    << (s.fused_attention ? "eager attention (LibTorch 1.13)" : "fused SDPA (LibTorch >= 2.0)") << "\n";
  o << "per-rank memory, GiB (formulas in src/dist/plan.cpp):\n";
  char line[256];
  std::snprintf(line, sizeof line, "  %-4s %-4s %8s %8s %8s %8s %8s %8s %9s %9s  %s\n", "zero", "ckpt", "weights",
                "grads", "master", "adam", "buffers", "activ.", "total", s.fused_attention ? "eager" : "fused",
                ("fits " + fmt("%.0f", gpu_gib) + " GiB").c_str());
  o << line;
  PlanSettings other = s;
  other.fused_attention = !s.fused_attention;
  std::string best, best_other;
  double best_total = 0, best_other_total = 0;
  for (int stage = 0; stage <= 2; ++stage) {
    for (bool ckpt : {false, true}) {
      MemoryEstimate e = estimate_memory(m, s, stage, ckpt);
      MemoryEstimate e2 = estimate_memory(m, other, stage, ckpt);
      const bool fits = e.total() <= gpu_gib * GiB;
      if (e2.total() <= gpu_gib * GiB && (best_other.empty() || e2.total() < best_other_total)) {
        best_other_total = e2.total();
        best_other = "ZeRO-" + std::to_string(stage) + (ckpt ? " + gradient checkpointing" : "");
      }
      std::snprintf(line, sizeof line, "  %-4d %-4s %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %9.1f %9.1f  %s\n", stage,
                    ckpt ? "yes" : "no", e.weights / GiB, e.grads / GiB, e.master / GiB, e.adam / GiB,
                    e.buffers / GiB, e.activations / GiB, e.total() / GiB, e2.total() / GiB, fits ? "yes" : "no");
      o << line;
      if (fits && (best.empty() || e.total() < best_total)) {
        best_total = e.total();
        best = "ZeRO-" + std::to_string(stage) + (ckpt ? " + gradient checkpointing" : "");
      }
    }
  }
  if (s.world_size <= 1) o << "(world_size 1: ZeRO stages 1 and 2 shard nothing)\n";
  if (best.empty())
    o << "nothing fits " << fmt("%.0f", gpu_gib)
      << " GiB per GPU: lower per_device_train_batch_size (raise gradient_accumulation_steps), use more ranks, "
         "or LoRA\n";
  else
    o << "smallest: " << best << ", " << fmt("%.1f", best_total / GiB) << " GiB per rank\n";
  if (!best_other.empty())
    o << "with " << (other.fused_attention ? "fused" : "eager") << " attention: smallest " << best_other << ", "
      << fmt("%.1f", best_other_total / GiB) << " GiB per rank\n";
  return o.str();
}

}  // namespace llava::dist
