#include "llava/example.h"

#include <filesystem>
#include <fstream>
#include <iterator>

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
size_t mask_by_rounds(const std::string& prompt, const ConversationTemplate& t, const LlamaTokenizer& tok,
                      PromptTokenizer& tokens, bool has_image, Ids& labels) {
  auto length = [&](const std::string& s) { return static_cast<long>(tokens.length(s, has_image)); };
  const bool llama2 = t.style == SeparatorStyle::kLlama2;
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
    if (!llama2 && i != 0 && !tok.legacy()) {
      round_len -= 1;
      instruction_len -= 1;
    }
    mask(cur, cur + instruction_len);
    cur += round_len;
  }
  mask(cur, static_cast<long>(labels.size()));
  return static_cast<size_t>(cur);
}

}  // namespace

std::vector<uint8_t> read_image_bytes(const ImageRef& ref, const std::string& ctx) {
  if (ref.kind == ImageRef::Kind::kInline) return ref.bytes;
  std::ifstream in(ref.path, std::ios::binary);
  if (!in) {
    std::string shown = ref.path.size() > 120 ? ref.path.substr(0, 120) + "..." : ref.path;
    if (ref.where.rfind("images", 0) == 0)
      throw Error(ctx + ": " + ref.where + " is neither base64 image data nor a readable file: '" + shown + "'");
    throw Error(ctx + ": " + ref.where + ": cannot read image file '" + shown + "'");
  }
  // one read of the whole file (an istreambuf_iterator copy goes byte by byte: ~50x slower)
  in.seekg(0, std::ios::end);
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max<std::streamoff>(0, in.tellg())));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!in) throw Error(ctx + ": " + ref.where + ": error reading image file '" + ref.path + "'");
  return bytes;
}

Example build_example(const Sample& sample, const ExampleOptions& opt) {
  const LlamaTokenizer& tok = *opt.tokenizer;
  PromptTokenizer tokens(tok, opt.prompt_cache.get());
  const ConversationTemplate& tmpl = *opt.conversation;
  const std::string ctx = sample_context(static_cast<long>(sample.index), sample.id);
  Example ex;
  ex.index = sample.index;
  ex.id = sample.id;
  ex.num_images = static_cast<int>(sample.images.size());
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
    ex.input_ids = to_ids(tokens.encode(ex.prompt, true));
    ex.labels = ex.input_ids;
    size_t masked = tokens.length(markers, true);
    for (size_t k = 0; k < masked && k < ex.labels.size(); ++k) ex.labels[k] = kIgnoreIndex;
  } else {
    ex.prompt = render_prompt(tmpl, turns);
    ex.input_ids = to_ids(tokens.encode(ex.prompt, has_image));
    ex.labels = ex.input_ids;
    size_t total_len = 0;
    for (int32_t id : ex.input_ids) total_len += id != tok.pad_id();
    size_t cur = mask_by_rounds(ex.prompt, tmpl, tok, tokens, has_image, ex.labels);
    if (cur < static_cast<size_t>(opt.model_max_length) && cur != total_len) {
      // LLaVA's mismatch rule: the round arithmetic disagrees with the real tokenization, so nothing
      // in the sample can be trusted as an answer; it is kept with every label masked.
      std::fill(ex.labels.begin(), ex.labels.end(), kIgnoreIndex);
      ex.warning = "WARNING: tokenization mismatch: " + std::to_string(cur) + " vs. " + std::to_string(total_len) +
                   ". (ignored) " + ctx;
    }
  }

  ex.length_with_images = static_cast<int>(ex.input_ids.size()) + ex.num_images * (opt.image_feature_positions - 1);
  for (int32_t l : ex.labels) ex.num_target_tokens += l != kIgnoreIndex;
  if (ex.length_with_images > opt.model_max_length)
    throw Error(ctx + ": too long: " + std::to_string(ex.length_with_images) + " positions after image expansion (" +
                std::to_string(ex.input_ids.size()) + " tokens + " + std::to_string(ex.num_images) + " image(s) x " +
                std::to_string(opt.image_feature_positions) + ") > --model_max_length " +
                std::to_string(opt.model_max_length) + " (LLaVA would silently cut the answer off)");

  if (opt.load_pixels || opt.check_images) {
    for (const ImageRef& ref : sample.images) {
      std::vector<uint8_t> file_bytes;  // a file's bytes; inline images are used where the sample holds them
      if (ref.kind == ImageRef::Kind::kPath) file_bytes = read_image_bytes(ref, ctx);
      const std::vector<uint8_t>& bytes = ref.kind == ImageRef::Kind::kPath ? file_bytes : ref.bytes;
      RgbImage rgb;
      try {
        rgb = decode_image(bytes.data(), bytes.size(), opt.image_config.shortest_edge);
      } catch (const Error& e) {
        throw Error(ctx + ": " + ref.where + (ref.kind == ImageRef::Kind::kPath ? " ('" + ref.path + "')" : "") +
                    ": " + e.what());
      }
      if (opt.load_pixels) ex.pixels.push_back(clip_preprocess(rgb, opt.image_config, opt.pad_to_square));
    }
  }
  return ex;
}

}  // namespace llava
