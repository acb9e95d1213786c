#include "llava/example.h"

#include <unistd.h>

#include <algorithm>

#include "llava/error.h"
#include "llava/prompt_tokens.h"
#include "llava/text_util.h"

namespace llava {
namespace {

using Ids = std::vector<int32_t>;

Ids to_ids(const std::vector<int>& v) { return Ids(v.begin(), v.end()); }

// LLaVA's preprocess_v1 (TWO style) and preprocess_llama_2: mask by round lengths.
// Each round string is tokenized on its own; its BOS stands in for the </s> that ends the previous
// round in the real sequence. Returns the final `cur` position.
size_t mask_by_rounds(const std::string& prompt, const ConversationTemplate& t, const Tokenizer& tok,
                      PromptTokenizer& tokens, bool has_image, Ids& labels) {
  auto length = [&](const std::string& s) { return static_cast<long>(tokens.length(s, has_image)); };
  const bool llama2 = t.style == SeparatorStyle::kLlama2;
  // The non-legacy correction is SentencePiece's (its "▁" dummy prefix); a byte-level BPE has no prefix space.
  const auto* spm = dynamic_cast<const LlamaTokenizer*>(&tok);
  const bool non_legacy_spm = spm && !spm->legacy();
  const std::string sep = llama2 ? "[/INST] " : t.sep + t.roles[1] + ": ";
  auto mask = [&](long from, long to) {
    for (long k = std::max(0L, from); k < std::min(to, static_cast<long>(labels.size())); ++k) labels[k] = kIgnoreIndex;
  };
  long cur = 1;
  mask(0, cur);
  std::vector<std::string> rounds = python_split(prompt, t.sep2);
  for (size_t i = 0; i < rounds.size(); ++i) {
    const std::string& rou = rounds[i];
    if (rou.empty()) break;
    std::vector<std::string> parts = python_split(rou, sep);
    if (parts.size() != 2) break;
    long round_len = length(rou);
    long instruction_len = length(parts[0] + sep) - 2;
    // transformers >= 4.35 with a non-legacy tokenizer: no dummy-prefix token after </s>
    if (!llama2 && i != 0 && non_legacy_spm) {
      round_len -= 1;
      instruction_len -= 1;
    }
    mask(cur, cur + instruction_len);
    cur += round_len;
  }
  mask(cur, static_cast<long>(labels.size()));
  return static_cast<size_t>(cur);
}

std::string join(const std::vector<std::string>& parts, size_t from, size_t to, const std::string& sep) {
  std::string out;
  for (size_t i = from; i < std::min(to, parts.size()); ++i) out += (i > from ? sep : "") + parts[i];
  return out;
}

// LLaVA's preprocess_mpt (chatml_direct): the prompt split on sep (<|im_end|>) and regrouped as
// system + user + assistant, then user + assistant pairs; `cur` starts at 0 and each round's own BOS is
// counted in its length. Returns the final `cur` position.
size_t mask_mpt_rounds(const std::string& prompt, const ConversationTemplate& t, const Tokenizer& tok,
                       PromptTokenizer& tokens, bool has_image, Ids& labels) {
  // getattr(tokenizer, 'legacy', False): only a SentencePiece tokenizer has the attribute
  const auto* spm = dynamic_cast<const LlamaTokenizer*>(&tok);
  const bool legacy = spm && spm->legacy();
  auto length = [&](const std::string& s) { return static_cast<long>(tokens.length(s, has_image)); };
  auto mask = [&](long from, long to) {
    for (long k = std::max(0L, from); k < std::min(to, static_cast<long>(labels.size())); ++k) labels[k] = kIgnoreIndex;
  };
  const std::string sep = t.sep + t.roles[1];
  const std::vector<std::string> rounds = python_split(prompt, t.sep);
  std::vector<std::string> re_rounds = {join(rounds, 0, 3, t.sep)};
  for (size_t i = 3; i < rounds.size(); i += 2) re_rounds.push_back(join(rounds, i, i + 2, t.sep));
  long cur = 0;
  for (size_t i = 0; i < re_rounds.size(); ++i) {
    const std::string& rou = re_rounds[i];
    if (rou.empty()) break;
    std::vector<std::string> parts = python_split(rou, sep);
    if (parts.size() != 2) break;
    long round_len = length(rou);
    long instruction_len = length(parts[0] + sep) - 1;
    if (i != 0 && legacy) {  // the reference's correction for legacy tokenizers (transformers >= 4.35)
      round_len += 1;
      instruction_len += 1;
    }
    mask(cur, cur + instruction_len);
    cur += round_len;
  }
  mask(cur, static_cast<long>(labels.size()));
  return static_cast<size_t>(cur);
}

void add_warning(Example& ex, const std::string& text) { ex.warning += (ex.warning.empty() ? "" : "; ") + text; }

// LLaVA-NeXT's preprocess_qwen (qwen_1_5): every message is rendered by its chat template,
// "<|im_start|>" + role + "\n" + content + "<|im_end|>\n" (first a system message with a fixed text), and
// tokenized on its own without BOS/EOS. System and user messages are masked, assistant messages supervised
// whole; then every id 198, <|im_start|> and <|im_end|> is supervised wherever it is, in system and user
// messages too. 198 is "\n" in Qwen's vocabulary: the reference hard-codes the id, and so do we.
void build_qwen_text(const std::vector<Turn>& turns, const Tokenizer& tok, const std::string& ctx, Example& ex) {
  constexpr int kQwenNewline = 198;
  const int im_start = tok.token_to_id("<|im_start|>"), im_end = tok.token_to_id("<|im_end|>");
  if (im_start < 0 || im_end < 0)
    throw Error(ctx + ": --version qwen_1_5 needs a tokenizer with the tokens <|im_start|> and <|im_end|>");
  // An <image> inside an assistant message keeps the <image> token's id as its label (the reference masks
  // only the input); without such a token it is not supervised.
  const int image_label = tok.token_to_id("<image>") >= 0 ? tok.token_to_id("<image>") : kIgnoreIndex;
  auto add_message = [&](const std::string& role, const std::string& content, bool supervised) {
    const std::string text = "<|im_start|>" + role + "\n" + content + "<|im_end|>\n";
    ex.prompt += text;
    for (int id : tok.encode_with_image_tokens(text, /*add_special_tokens=*/false)) {
      ex.input_ids.push_back(id);
      ex.labels.push_back(!supervised ? kIgnoreIndex : id == kImageTokenIndex ? image_label : id);
    }
  };
  add_message("system", "You are a helpful assistant.", false);
  for (const Turn& t : turns) add_message(t.from_human ? "user" : "assistant", t.value, !t.from_human);
  for (size_t i = 0; i < ex.input_ids.size(); ++i) {
    const int id = ex.input_ids[i];
    if (id == kQwenNewline || id == im_start || id == im_end) ex.labels[i] = id;
  }
}

// Prompt, input_ids and labels of a non-plain template, with LLaVA's mismatch rule.
void build_text(const std::vector<Turn>& turns, const ConversationTemplate& tmpl, const Tokenizer& tok,
                const ExampleOptions& opt, const std::string& ctx, Example& ex) {
  const bool has_image = ex.num_images > 0;
  PromptTokenizer tokens(tok, opt.prompt_cache.get());
  ex.prompt = render_prompt(tmpl, turns);
  ex.input_ids = to_ids(tokens.encode(ex.prompt, has_image));
  ex.labels = ex.input_ids;
  size_t total_len = 0;
  for (int32_t id : ex.input_ids) total_len += id != tok.pad_id();
  size_t cur = tmpl.style == SeparatorStyle::kMpt
                   ? mask_mpt_rounds(ex.prompt, tmpl, tok, tokens, has_image, ex.labels)
                   : mask_by_rounds(ex.prompt, tmpl, tok, tokens, has_image, ex.labels);
  if (cur < static_cast<size_t>(opt.model_max_length) && cur != total_len) {
    // LLaVA's mismatch rule: the round arithmetic disagrees with the real tokenization, so nothing
    // in the sample can be trusted as an answer; it is kept with every label masked.
    std::fill(ex.labels.begin(), ex.labels.end(), kIgnoreIndex);
    add_warning(ex, "WARNING: tokenization mismatch: " + std::to_string(cur) + " vs. " + std::to_string(total_len) +
                        ". (ignored) " + ctx);
  }
}

RgbImage decode_ref(const ImageRef& ref, const std::string& ctx, int min_short_side) {
  std::vector<uint8_t> file_bytes;  // a file's bytes; an inline image is decoded where the sample holds it
  if (ref.kind == ImageRef::Kind::kPath) file_bytes = read_image_bytes(ref, ctx);
  const std::vector<uint8_t>& bytes = ref.kind == ImageRef::Kind::kPath ? file_bytes : ref.bytes;
  try {
    return decode_image(bytes.data(), bytes.size(), min_short_side);
  } catch (const Error& e) {
    throw Error(ctx + ": " + ref.where + (ref.kind == ImageRef::Kind::kPath ? " ('" + ref.path + "')" : "") + ": " +
                e.what());
  }
}

// anyres: decode every image at full size (its size picks the grid), lay the sample's images out under
// the tile budget, count their real positions, then tile the pixels.
void add_anyres_images(const Sample& sample, const ExampleOptions& opt, const std::string& ctx, Example& ex) {
  const AnyresConfig& cfg = *opt.anyres;
  std::vector<RgbImage> decoded;
  for (const ImageRef& ref : sample.images) {
    decoded.push_back(decode_ref(ref, ctx, 0));
    ex.image_sizes.push_back({decoded.back().width, decoded.back().height});
  }
  ex.image_layouts = anyres_sample_layouts(ex.image_sizes, cfg);
  long positions = 0, full_tiles = 0;
  std::string per_image, cut;
  for (size_t k = 0; k < ex.image_layouts.size(); ++k) {
    const AnyresImageLayout& l = ex.image_layouts[k];
    positions += l.positions;
    full_tiles += 1 + l.grid_w * l.grid_h;
    per_image += (k ? " + " : "") + std::to_string(l.positions);
    if (l.base_only) {
      ++ex.images_base_only;
      cut += (cut.empty() ? "" : ", ") + std::to_string(k);
    }
  }
  ex.length_with_images = static_cast<int>(static_cast<long>(ex.input_ids.size()) - ex.num_images + positions);
  if (ex.length_with_images > opt.model_max_length)
    throw Error(ctx + ": too long: " + std::to_string(ex.length_with_images) + " positions after image expansion (" +
                std::to_string(ex.input_ids.size()) + " tokens + " + std::to_string(ex.num_images) +
                " anyres image(s) of " + per_image + " positions) > --model_max_length " +
                std::to_string(opt.model_max_length) + " (LLaVA would silently cut the answer off" +
                (ex.images_base_only < ex.num_images ? "; --max_tiles_per_sample caps the tiles)" : ")"));
  if (ex.images_base_only)
    add_warning(ex, ctx + ": --max_tiles_per_sample " + std::to_string(cfg.max_tiles_per_sample) + ": image(s) " + cut +
                        " use the base tile only (full tiling: " + std::to_string(full_tiles) + " tiles)");
  if (!opt.load_pixels) return;
  for (size_t k = 0; k < decoded.size(); ++k)
    ex.pixels.push_back(anyres_preprocess(decoded[k], ex.image_layouts[k], opt.image_config));
}

// The images of a sample (decoded and preprocessed unless options say otherwise) and the length check with
// each image's positions counted.
void add_images(const Sample& sample, const ExampleOptions& opt, const std::string& ctx, Example& ex) {
  if (opt.anyres) {
    add_anyres_images(sample, opt, ctx, ex);
    return;
  }

  ex.length_with_images = static_cast<int>(ex.input_ids.size()) + ex.num_images * (opt.image_feature_positions - 1);
  if (ex.length_with_images > opt.model_max_length)
    throw Error(ctx + ": too long: " + std::to_string(ex.length_with_images) + " positions after image expansion (" +
                std::to_string(ex.input_ids.size()) + " tokens + " + std::to_string(ex.num_images) + " image(s) x " +
                std::to_string(opt.image_feature_positions) + ") > --model_max_length " +
                std::to_string(opt.model_max_length) + " (LLaVA would silently cut the answer off)");

  if (opt.load_pixels || opt.check_images) {
    for (const ImageRef& ref : sample.images) {
      RgbImage rgb = decode_ref(ref, ctx, opt.image_config.shortest_edge);
      if (opt.load_pixels) ex.pixels.push_back(clip_preprocess(rgb, opt.image_config, opt.pad_to_square));
    }
  }
}

}  // namespace

std::string image_aspect_ratio_name(const ExampleOptions& o) {
  return o.anyres ? "anyres" : o.pad_to_square ? "pad" : "square";
}

int64_t estimated_image_positions(int num_images, const ExampleOptions& o) {
  if (!o.anyres) return static_cast<int64_t>(num_images) * o.image_feature_positions;
  const AnyresConfig& cfg = *o.anyres;
  const int tile = cfg.tile_size;
  int most_tiles = 1;
  for (const ImageSize& p : cfg.pinpoints) most_tiles = std::max(most_tiles, 1 + (p.width / tile) * (p.height / tile));
  const int64_t full = anyres_max_image_positions(cfg);
  const int64_t base = anyres_image_layout({tile, tile}, cfg, /*base_only=*/true).positions;
  // anyres_sample_layouts' budget with every image at its most tiles
  int64_t positions = 0, used = 0;
  bool cut = false;
  for (int k = 0; k < num_images; ++k) {
    const int64_t later = num_images - k - 1;
    cut = cut || (cfg.max_tiles_per_sample > 0 && used + most_tiles + later > cfg.max_tiles_per_sample);
    positions += cut ? base : full;
    used += cut ? 1 : most_tiles;
  }
  return positions;
}

std::vector<uint8_t> read_image_bytes(const ImageRef& ref, const std::string& ctx) {
  if (ref.kind == ImageRef::Kind::kInline) return ref.bytes;
  // An `images` entry that is neither valid base64 nor an existing path: say both (it may be a long,
  // broken base64 string, so only its start is shown).
  if (ref.where.rfind("images", 0) == 0 && ::access(ref.path.c_str(), F_OK) != 0) {
    std::string shown = ref.path.size() > 120 ? ref.path.substr(0, 120) + "..." : ref.path;
    throw Error(ctx + ": " + ref.where + " is neither base64 image data nor a readable file: '" + shown + "'");
  }
  try {
    return read_image_file(ref.path);  // only regular files: a folder or FIFO is an error, never a hang
  } catch (const Error& e) {
    throw Error(ctx + ": " + ref.where + ": " + e.what());
  }
}

namespace {

// The example's identity: which sample it is and how many images it names.
Example example_of(const Sample& sample) {
  Example ex;
  ex.index = sample.index;
  ex.id = sample.id;
  ex.num_images = static_cast<int>(sample.images.size());
  return ex;
}

}  // namespace

Example build_example(const Sample& sample, const ExampleOptions& opt) {
  const Tokenizer& tok = *opt.tokenizer;
  const ConversationTemplate& tmpl = *opt.conversation;
  const std::string ctx = sample_context(static_cast<long>(sample.index), sample.id);
  Example ex = example_of(sample);
  const bool has_image = ex.num_images > 0;

  std::vector<Turn> turns = sample.turns;
  std::string err = place_image_markers(turns, ex.num_images, opt.placement, tmpl.wraps_image_tags());
  if (!err.empty()) throw Error(ctx + ": " + err);

  if (tmpl.style == SeparatorStyle::kPlain) {
    // preprocess_plain: the human text is replaced by the image marker(s); caption + "\n" supervised.
    if (!has_image) throw Error(ctx + ": the plain (pretraining) template needs an image");
    if (turns.size() != 2) throw Error(ctx + ": the plain (pretraining) template needs exactly 2 turns");
    std::string markers;
    for (int k = 0; k < ex.num_images; ++k) markers += "<image>";
    ex.prompt = markers + turns[1].value + tmpl.sep;
    ex.input_ids = to_ids(tok.encode_with_image_tokens(ex.prompt));
    ex.labels = ex.input_ids;
    size_t masked = tok.encode_with_image_tokens(markers).size();
    for (size_t k = 0; k < masked && k < ex.labels.size(); ++k) ex.labels[k] = kIgnoreIndex;
  } else if (tmpl.version == "qwen") {
    build_qwen_text(turns, tok, ctx, ex);
  } else {
    build_text(turns, tmpl, tok, opt, ctx, ex);
  }
  for (int32_t l : ex.labels) ex.num_target_tokens += l != kIgnoreIndex;
  add_images(sample, opt, ctx, ex);
  return ex;
}

Example build_generation_example(const Sample& sample, const ExampleOptions& opt) {
  const Tokenizer& tok = *opt.tokenizer;
  const ConversationTemplate& tmpl = *opt.conversation;
  const std::string ctx = sample_context(static_cast<long>(sample.index), sample.id);
  Example ex = example_of(sample);

  std::vector<Turn> turns = generation_turns(sample.turns, &ex.reference);
  if (turns.empty()) throw Error(ctx + ": no human turn to answer");
  ex.has_reference = turns.size() < sample.turns.size();
  ex.question = turns.back().value;
  std::string err = place_image_markers(turns, ex.num_images, opt.placement, tmpl.wraps_image_tags());
  if (!err.empty()) throw Error(ctx + ": " + err);
  if (tmpl.style == SeparatorStyle::kPlain) {  // pre-training's prompt: the markers; the model writes the caption
    if (ex.num_images == 0) throw Error(ctx + ": the plain (pretraining) template needs an image");
    for (int k = 0; k < ex.num_images; ++k) ex.prompt += "<image>";
  } else {
    ex.prompt = render_generation_prompt(tmpl, turns);
  }
  ex.input_ids = to_ids(ex.num_images > 0 ? tok.encode_with_image_tokens(ex.prompt) : tok.encode(ex.prompt));
  ex.labels.assign(ex.input_ids.size(), kIgnoreIndex);
  add_images(sample, opt, ctx, ex);
  return ex;
}

}  // namespace llava
