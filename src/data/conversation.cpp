#include "llava/conversation.h"

#include <map>

#include "llava/error.h"
#include "llava/text_util.h"

namespace llava {
namespace {

const std::string kImageMarker = "<image>";

std::vector<ConversationTemplate> make_templates() {
  const std::string vicuna_system =
      "A chat between a curious user and an artificial intelligence assistant. "
      "The assistant gives helpful, detailed, and polite answers to the user's questions.";
  const std::string llava_v1_system =
      "A chat between a curious human and an artificial intelligence assistant. "
      "The assistant gives helpful, detailed, and polite answers to the human's questions.";
  // No space between "language." and "The visual": that is how LLaVA's string literals join.
  const std::string mmtag_system =
      "A chat between a curious user and an artificial intelligence assistant. "
      "The assistant is able to understand the visual content that the user provides, and assist the user with a "
      "variety of tasks using natural language.The visual content will be provided with the following format: "
      "<Image>visual content</Image>.";
  const std::string llama2_system =
      "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being "
      "safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal "
      "content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question "
      "does not make any sense, or is not factually coherent, explain why instead of answering something not "
      "correct. If you don't know the answer to a question, please don't share false information.";
  const std::string llava_llama2_system =
      "You are a helpful language and vision assistant. You are able to understand the visual content that the "
      "user provides, and assist the user with a variety of tasks using natural language.";
  const std::string chatml_system = "<|im_start|>system\nAnswer the questions.";
  using S = SeparatorStyle;
  return {
      {"vicuna_v1", "v1", vicuna_system, {"USER", "ASSISTANT"}, S::kTwo, " ", "</s>"},
      {"llava_v1", "v1", llava_v1_system, {"USER", "ASSISTANT"}, S::kTwo, " ", "</s>"},
      {"v1_mmtag", "v1_mmtag", mmtag_system, {"USER", "ASSISTANT"}, S::kTwo, " ", "</s>"},
      {"llama_2", "llama_v2", llama2_system, {"USER", "ASSISTANT"}, S::kLlama2, "<s>", "</s>"},
      {"llava_llama_2", "llama_v2", llava_llama2_system, {"USER", "ASSISTANT"}, S::kLlama2, "<s>", "</s>"},
      // LLaVA-1.6 Mistral: LLAMA_2 style without a system prompt and with an empty sep (no <s> between rounds)
      {"mistral_instruct", "llama_v2", "", {"USER", "ASSISTANT"}, S::kLlama2, "", "</s>"},
      // ChatML as text: the roles carry "<|im_start|>role\n", every message ends with sep <|im_end|>
      {"chatml_direct", "mpt", chatml_system, {"<|im_start|>user\n", "<|im_start|>assistant\n"}, S::kMpt, "<|im_end|>", ""},
      {"mistral_direct", "mpt", chatml_system, {"<|im_start|>user\n", "<|im_start|>assistant\n"}, S::kMpt, "<|im_end|>", ""},
      {"plain", "plain", "", {"", ""}, S::kPlain, "\n", ""},
      // LLaVA-NeXT's conv_qwen (qwen_1_5, also registered as qwen_2): ChatML with the role in the header line
      {"qwen_1_5", "qwen", "<|im_start|>system\nYou are a helpful assistant.", {"<|im_start|>user", "<|im_start|>assistant"},
       S::kChatml, "<|im_end|>", ""},
  };
}

const std::map<std::string, std::string>& aliases() {
  static const std::map<std::string, std::string> a = {
      {"v1", "vicuna_v1"}, {"mmtag", "v1_mmtag"}, {"v0_plain", "plain"}, {"llava_llama2", "llava_llama_2"},
      {"qwen_2", "qwen_1_5"}};
  return a;
}

}  // namespace

const ConversationTemplate& ConversationTemplate::get(const std::string& version) {
  static const std::vector<ConversationTemplate> templates = make_templates();
  auto alias = aliases().find(version);
  const std::string& name = alias == aliases().end() ? version : alias->second;
  for (const auto& t : templates)
    if (t.name == name) return t;
  std::string known;
  for (const auto& n : names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown --version '" + version + "' (conversation templates: " + known + ")");
}

std::vector<std::string> ConversationTemplate::names() {
  return {"v1",            "vicuna_v1",        "llava_v1",      "mmtag",          "v1_mmtag", "llama_2",
          "llava_llama_2", "mistral_instruct", "chatml_direct", "mistral_direct", "plain",    "v0_plain",
          "qwen_1_5",      "qwen_2"};
}

std::string render_prompt(const ConversationTemplate& t, const std::vector<Turn>& turns) {
  std::string ret;
  if (t.style == SeparatorStyle::kTwo) {
    // system + sep, then "ROLE: msg" + (sep after human turns, sep2 after assistant turns)
    ret = t.system + t.sep;
    for (size_t i = 0; i < turns.size(); ++i) {
      const std::string& role = t.roles[turns[i].from_human ? 0 : 1];
      // an empty message renders as "ROLE:" (the generation prompt), as get_prompt does
      ret += turns[i].value.empty() ? role + ":" : role + ": " + turns[i].value + (i % 2 == 0 ? t.sep : t.sep2);
    }
    return ret;
  }
  if (t.style == SeparatorStyle::kLlama2) {
    for (size_t i = 0; i < turns.size(); ++i) {
      std::string msg = turns[i].value;
      if (msg.empty()) continue;
      if (i == 0 && !t.system.empty()) msg = "<<SYS>>\n" + t.system + "\n<</SYS>>\n\n" + msg;
      if (i % 2 == 0)
        ret += t.sep + "[INST] " + msg + " [/INST]";
      else
        ret += " " + msg + " " + t.sep2;
    }
    return python_lstrip_chars(ret, t.sep);  // LLaVA's ret.lstrip(self.sep): strips characters, not a prefix
  }
  if (t.style == SeparatorStyle::kMpt) {
    // system + sep, then role + msg + sep per message; an empty message renders as the bare role
    ret = t.system + t.sep;
    for (const Turn& turn : turns) {
      const std::string& role = t.roles[turn.from_human ? 0 : 1];
      ret += turn.value.empty() ? role : role + turn.value + t.sep;
    }
    return ret;
  }
  if (t.style == SeparatorStyle::kChatml) {
    // system + sep + "\n", then role + "\n" + msg + sep + "\n"; an empty message renders as role + "\n"
    ret = t.system.empty() ? "" : t.system + t.sep + "\n";
    for (const Turn& turn : turns) {
      const std::string& role = t.roles[turn.from_human ? 0 : 1];
      ret += turn.value.empty() ? role + "\n" : role + "\n" + turn.value + t.sep + "\n";
    }
    return ret;
  }
  throw Error("render_prompt: the plain template is rendered by the example builder");
}

std::vector<Turn> generation_turns(const std::vector<Turn>& turns, std::string* dropped_answer) {
  size_t end = turns.size();
  while (end > 0 && !turns[end - 1].from_human) --end;
  if (dropped_answer) *dropped_answer = end < turns.size() ? turns.back().value : std::string();
  return std::vector<Turn>(turns.begin(), turns.begin() + static_cast<std::ptrdiff_t>(end));
}

std::string render_generation_prompt(const ConversationTemplate& t, const std::vector<Turn>& turns) {
  std::vector<Turn> with_reply = turns;
  with_reply.push_back({/*from_human=*/false, ""});  // append_message(roles[1], None)
  return render_prompt(t, with_reply);
}

int count_image_markers(const std::string& text) {
  int n = 0;
  for (size_t pos = 0; (pos = text.find(kImageMarker, pos)) != std::string::npos; pos += kImageMarker.size()) ++n;
  return n;
}

std::string place_image_markers(std::vector<Turn>& turns, int num_images, ImagePlacement placement, bool wrap_mmtag) {
  int total = 0;
  for (const auto& t : turns) total += count_image_markers(t.value);
  if (total == 0 && num_images > 0) {
    for (auto& t : turns)
      if (t.from_human) {
        std::string prefix;
        for (int i = 0; i < num_images; ++i) prefix += kImageMarker + "\n";
        t.value = prefix + t.value;
        total = num_images;
        break;
      }
  }
  if (total != num_images)
    return "the conversation has " + std::to_string(total) + " <image> marker(s) but the sample has " +
           std::to_string(num_images) + " image(s)";
  if (num_images == 0) return "";  // text-only samples are left as written (LLaVA only rewrites image samples)
  for (auto& t : turns) {
    int n = count_image_markers(t.value);
    if (n == 0) continue;
    if (placement == ImagePlacement::kNext) {
      // only a single marker that is not already in front moves (interleaved multi-image turns stay)
      if (n != 1 || t.value.rfind(kImageMarker, 0) == 0) continue;
      t.value = python_strip(kImageMarker + "\n" + python_strip(replace_all(t.value, kImageMarker, "")));
      if (wrap_mmtag) t.value = replace_all(t.value, kImageMarker, "<Image>" + kImageMarker + "</Image>");
      continue;
    }
    if (placement == ImagePlacement::kFront) {
      std::string front;
      for (int i = 0; i < n; ++i) front += kImageMarker + "\n";
      t.value = python_strip(front + python_strip(replace_all(t.value, kImageMarker, "")));
    }
    if (wrap_mmtag) t.value = replace_all(t.value, kImageMarker, "<Image>" + kImageMarker + "</Image>");
  }
  return "";
}

}  // namespace llava
