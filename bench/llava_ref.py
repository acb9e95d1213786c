"""Plain-PyTorch LLaVA (written from scratch for the benchmarks; no transformers): CLIP vision tower,
mlp2x_gelu projector, LLaMA decoder (RoPE in HF's rotate_half layout, GQA, RMSNorm, SwiGLU), LLaVA's
prepare_inputs_labels_for_multimodal merge and the shifted cross-entropy of LlamaForCausalLM.

Each piece follows the code LLaVA trains with (transformers 4.37.2 eager modules, LLaVA @ c121f04), op for op,
so that its speed stands in for LLaVA's Python training step on the same model and batch:
  * CLIPVisionTower.forward runs under torch.no_grad() and runs *every* encoder layer with
    output_hidden_states=True (the last layer is computed and thrown away, as LLaVA does), then takes
    hidden_states[vision_feature_layer] and drops CLS; post_layernorm is applied to the CLS token only.
  * LlamaRMSNorm in float32, eager attention with an additive causal+padding mask and softmax in float32,
    rotary cos/sin cached for max_position_embeddings, repeat_kv for GQA.
  * The merge embeds each sample's text chunks with one embed_tokens call and splices image features,
    right-pads with zeros, attention_mask marks real positions, position_ids = 0..L-1.
  * Loss: logits.float(), shift by one, CrossEntropyLoss(ignore_index=-100), mean over the batch's
    supervised tokens.

Weights come from an HF LLaVA directory (config.json model_type llava, model.safetensors, HF names).
Only /usr/bin/python3 with Debian's torch + numpy is needed (safetensors is read by hand).
"""
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGE_TOKEN_INDEX = -200
IGNORE_INDEX = -100

# "eager": the written-out attention above (transformers 4.37's default modules); "sdpa": the same masks through
# F.scaled_dot_product_attention (transformers' attn_implementation="sdpa"), the fair reference on a GPU,
# where llava-train built on LibTorch 2.x uses the fused kernel too.
ATTENTION = "eager"

# ----------------------------------------------------------------------------------------------- safetensors

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32,
              "U8": np.uint8, "I8": np.int8, "BOOL": np.bool_}


def load_safetensors(path):
    """name -> torch tensor (copies; bf16 via int16 view)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        if info["dtype"] == "BF16":
            arr = np.frombuffer(data, dtype=np.int16, count=(e - b) // 2, offset=b)
            t = torch.from_numpy(arr.copy()).view(torch.bfloat16)
        else:
            dt = _ST_DTYPES[info["dtype"]]
            arr = np.frombuffer(data, dtype=dt, count=(e - b) // np.dtype(dt).itemsize, offset=b)
            t = torch.from_numpy(arr.copy())
        out[name] = t.reshape(info["shape"])
    return out


def load_checkpoint_dir(model_dir):
    """model.safetensors or shards listed in model.safetensors.index.json."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        out = {}
        for fn in files:
            out.update(load_safetensors(os.path.join(model_dir, fn)))
        return out
    return load_safetensors(os.path.join(model_dir, "model.safetensors"))


def save_safetensors(tensors, path, metadata=None):
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)


# ----------------------------------------------------------------------------------------------- config

class Cfg:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        if c.get("model_type") != "llava":
            raise ValueError(f"{model_dir}: expected an HF LLaVA config (model_type llava)")
        v, t = c["vision_config"], c["text_config"]
        self.v_hidden = v.get("hidden_size", 768)
        self.v_inter = v.get("intermediate_size", 3072)
        self.v_layers = v.get("num_hidden_layers", 12)
        self.v_heads = v.get("num_attention_heads", 12)
        self.v_image = v.get("image_size", 224)
        self.v_patch = v.get("patch_size", 32)
        self.v_eps = v.get("layer_norm_eps", 1e-5)
        self.v_act = v.get("hidden_act", "quick_gelu")
        self.vocab = t.get("vocab_size", 32000)
        self.hidden = t.get("hidden_size", 4096)
        self.inter = t.get("intermediate_size", 11008)
        self.layers = t.get("num_hidden_layers", 32)
        self.heads = t.get("num_attention_heads", 32)
        self.kv_heads = t.get("num_key_value_heads") or self.heads
        self.head_dim = t.get("head_dim") or self.hidden // self.heads
        self.max_pos = t.get("max_position_embeddings", 2048)
        self.rms_eps = t.get("rms_norm_eps", 1e-6)
        self.rope_theta = t.get("rope_theta", 10000.0)
        self.pad_token_id = t.get("pad_token_id")
        if t.get("rope_scaling"):
            raise ValueError("rope_scaling not supported by the reference")
        self.feature_layer = c.get("vision_feature_layer", -2)
        self.select = c.get("vision_feature_select_strategy", "default")
        self.proj_act = c.get("projector_hidden_act", "gelu")


def _act(name):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":
        return F.gelu
    if name == "silu":
        return F.silu
    raise ValueError(name)


# ----------------------------------------------------------------------------------------------- CLIP

class ClipAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.v_hidden
        self.heads, self.head_dim = cfg.v_heads, d // cfg.v_heads
        self.scale = self.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x):
        b, n, d = x.shape
        q = self.q_proj(x) * self.scale
        k = self.k_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        q = q.view(b, n, self.heads, self.head_dim).transpose(1, 2)
        if ATTENTION == "sdpa":  # q is already scaled
            o = F.scaled_dot_product_attention(q, k, v, scale=1.0).transpose(1, 2).reshape(b, n, d)
            return self.out_proj(o)
        w = torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1)
        o = torch.matmul(w, v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(o)


class ClipMlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(cfg.v_hidden, cfg.v_inter), nn.Linear(cfg.v_inter, cfg.v_hidden)
        self.act = _act(cfg.v_act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ClipLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.v_hidden, eps=cfg.v_eps)
        self.self_attn = ClipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.v_hidden, eps=cfg.v_eps)
        self.mlp = ClipMlp(cfg)

    def forward(self, x):
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class ClipEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(cfg.v_hidden))
        self.patch_embedding = nn.Conv2d(3, cfg.v_hidden, cfg.v_patch, stride=cfg.v_patch, bias=False)
        n = (cfg.v_image // cfg.v_patch) ** 2 + 1
        self.position_embedding = nn.Embedding(n, cfg.v_hidden)
        self.register_buffer("position_ids", torch.arange(n).unsqueeze(0), persistent=False)

    def forward(self, pixel_values):
        b = pixel_values.shape[0]
        patches = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.expand(b, 1, -1), patches], dim=1)
        return x + self.position_embedding(self.position_ids)


class ClipVisionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.embeddings = ClipEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg.v_hidden, eps=cfg.v_eps)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList([ClipLayer(cfg) for _ in range(cfg.v_layers)])
        self.post_layernorm = nn.LayerNorm(cfg.v_hidden, eps=cfg.v_eps)

    @torch.no_grad()  # LLaVA's CLIPVisionTower.forward (frozen tower)
    def forward(self, pixel_values):
        h = self.pre_layrnorm(self.embeddings(pixel_values))
        hidden_states = [h]
        for layer in self.encoder.layers:  # all layers, output_hidden_states=True, as HF/LLaVA run them
            h = layer(h)
            hidden_states.append(h)
        self.post_layernorm(h[:, 0, :])  # pooled output, unused
        feats = hidden_states[self.cfg.feature_layer]
        return feats[:, 1:] if self.cfg.select == "default" else feats


# ----------------------------------------------------------------------------------------------- LLaMA

class RmsNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        dt = x.dtype
        x = x.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + self.eps)
        return self.weight * x.to(dt)


class Rotary(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg.head_dim
        inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2).float() / d))
        t = torch.arange(cfg.max_pos, dtype=inv_freq.dtype)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos_cached", emb.cos(), persistent=False)
        self.register_buffer("sin_cached", emb.sin(), persistent=False)

    def forward(self, x, seq_len):
        return self.cos_cached[:seq_len].to(x.dtype), self.sin_cached[:seq_len].to(x.dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        h, hd = cfg.hidden, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.heads * hd, bias=False)
        self.k_proj = nn.Linear(h, cfg.kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(h, cfg.kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(cfg.heads * hd, h, bias=False)
        self.rotary_emb = Rotary(cfg)

    def forward(self, x, mask, position_ids):
        c = self.cfg
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, c.heads, c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, c.kv_heads, c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, c.kv_heads, c.head_dim).transpose(1, 2)
        cos, sin = self.rotary_emb(v, seq_len=n)
        cos, sin = cos[position_ids].unsqueeze(1), sin[position_ids].unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = c.heads // c.kv_heads
        if rep > 1:  # repeat_kv
            k = k[:, :, None].expand(b, c.kv_heads, rep, n, c.head_dim).reshape(b, c.heads, n, c.head_dim)
            v = v[:, :, None].expand(b, c.kv_heads, rep, n, c.head_dim).reshape(b, c.heads, n, c.head_dim)
        if ATTENTION == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
            return self.o_proj(o.transpose(1, 2).reshape(b, n, c.heads * c.head_dim))
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(c.head_dim) + mask
        w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        o = torch.matmul(w, v).transpose(1, 2).reshape(b, n, c.heads * c.head_dim)
        return self.o_proj(o)


class LlamaMlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.inter, bias=False)
        self.up_proj = nn.Linear(cfg.hidden, cfg.inter, bias=False)
        self.down_proj = nn.Linear(cfg.inter, cfg.hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = RmsNorm(cfg.hidden, cfg.rms_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = RmsNorm(cfg.hidden, cfg.rms_eps)
        self.mlp = LlamaMlp(cfg)

    def forward(self, x, mask, position_ids):
        x = x + self.self_attn(self.input_layernorm(x), mask, position_ids)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.hidden, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList([LlamaLayer(cfg) for _ in range(cfg.layers)])
        self.norm = RmsNorm(cfg.hidden, cfg.rms_eps)

    def forward(self, inputs_embeds, attention_mask, position_ids):
        b, n, _ = inputs_embeds.shape
        dt = inputs_embeds.dtype
        minv = torch.finfo(dt).min
        # _prepare_4d_causal_attention_mask: causal + padding (keys), additive
        causal = torch.full((n, n), minv, dtype=dt, device=inputs_embeds.device).triu(1)
        mask = causal[None, None].expand(b, 1, n, n).clone()
        mask = mask.masked_fill(~attention_mask[:, None, None, :].bool(), minv)
        h = inputs_embeds
        for layer in self.layers:
            h = layer(h, mask, position_ids)
        return self.norm(h)


class LlamaForCausalLM(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)


class Projector(nn.Module):  # mlp2x_gelu
    def __init__(self, cfg):
        super().__init__()
        self.linear_1 = nn.Linear(cfg.v_hidden, cfg.hidden)
        self.linear_2 = nn.Linear(cfg.hidden, cfg.hidden)
        self.act = _act(cfg.proj_act)

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(x)))


class VisionTower(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vision_model = ClipVisionModel(cfg)


class Llava(nn.Module):
    """Parameter names = HF LlavaForConditionalGeneration's, so the safetensors load with strict=True."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.vision_tower = VisionTower(cfg)
        self.multi_modal_projector = Projector(cfg)
        self.language_model = LlamaForCausalLM(cfg)

    @classmethod
    def from_dir(cls, model_dir):
        cfg = Cfg(model_dir)
        m = cls(cfg)
        sd = load_checkpoint_dir(model_dir)
        missing, unexpected = m.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"{model_dir}: missing {missing[:5]}, unexpected {unexpected[:5]}")
        return m

    def encode_images(self, pixel_values):
        return self.multi_modal_projector(self.vision_tower.vision_model(pixel_values))

    def merge(self, input_ids, labels, pixel_values):
        """prepare_inputs_labels_for_multimodal: input_ids/labels are lists of 1-D LongTensors (unpadded),
        pixel_values [n_images, 3, H, W] in batch order (or None)."""
        embed = self.language_model.model.embed_tokens
        feats = self.encode_images(pixel_values) if pixel_values is not None and len(pixel_values) else None
        new_embeds, new_labels, cur_image = [], [], 0
        for ids, lab in zip(input_ids, labels):
            pos = [-1] + torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist() + [ids.shape[0]]
            ids_noim = [ids[pos[i] + 1:pos[i + 1]] for i in range(len(pos) - 1)]
            lab_noim = [lab[pos[i] + 1:pos[i + 1]] for i in range(len(pos) - 1)]
            split_sizes = [x.shape[0] for x in lab_noim]
            cur_embeds = embed(torch.cat(ids_noim))
            cur_embeds_noim = torch.split(cur_embeds, split_sizes, dim=0)
            parts, lparts = [], []
            for i in range(len(pos) - 1):
                parts.append(cur_embeds_noim[i])
                lparts.append(lab_noim[i])
                if i < len(pos) - 2:
                    f = feats[cur_image]
                    cur_image += 1
                    parts.append(f)
                    lparts.append(torch.full((f.shape[0],), IGNORE_INDEX, dtype=lab.dtype, device=lab.device))
            new_embeds.append(torch.cat(parts))
            new_labels.append(torch.cat(lparts))
        b, n = len(new_embeds), max(x.shape[0] for x in new_embeds)
        d = new_embeds[0].shape[1]
        dev = new_embeds[0].device
        embeds = torch.zeros((b, n, d), dtype=new_embeds[0].dtype, device=dev)
        labels_p = torch.full((b, n), IGNORE_INDEX, dtype=new_labels[0].dtype, device=dev)
        attn = torch.zeros((b, n), dtype=torch.bool, device=dev)
        position_ids = torch.zeros((b, n), dtype=torch.long, device=dev)
        for i, (e, l) in enumerate(zip(new_embeds, new_labels)):
            k = e.shape[0]
            embeds[i, :k] = e
            labels_p[i, :k] = l
            attn[i, :k] = True
            position_ids[i, :k] = torch.arange(k, device=dev)
        return embeds, labels_p, attn, position_ids

    def forward(self, input_ids, labels, pixel_values):
        """Mean loss over the batch's supervised tokens, plus the merged batch's shape info."""
        embeds, labels_p, attn, position_ids = self.merge(input_ids, labels, pixel_values)
        h = self.language_model.model(embeds, attn, position_ids)
        logits = self.language_model.lm_head(h).float()
        shift_logits = logits[..., :-1, :].contiguous().view(-1, logits.shape[-1])
        shift_labels = labels_p[..., 1:].contiguous().view(-1)
        loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX)
        return loss, {"real_positions": int(attn.sum()), "padded_positions": int(attn.numel())}


def trainable_parameters(model, stage="finetune"):
    """finetune: LLM + projector (vision frozen); pretrain: projector only."""
    for p in model.parameters():
        p.requires_grad_(False)
    mods = [model.multi_modal_projector] + ([model.language_model] if stage == "finetune" else [])
    params = []
    for m in mods:
        for p in m.parameters():
            p.requires_grad_(True)
            params.append(p)
    return params
