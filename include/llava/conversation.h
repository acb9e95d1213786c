#pragma once
// Conversation templates as LLaVA's llava/conversation.py defines them, and the rules that place the
// <image> markers in the turns before templating (design.md §3, fixtures README convention 1).
#include <string>
#include <vector>

namespace llava {

enum class SeparatorStyle { kTwo, kLlama2, kMpt, kPlain, kChatml };

struct ConversationTemplate {
  std::string name;     // key in LLaVA's conv_templates ("vicuna_v1", ...)
  std::string version;  // Conversation.version ("v1", "llama_v2", "v1_mmtag", "mpt", "plain", "qwen")
  std::string system;
  std::string roles[2];  // human, assistant
  SeparatorStyle style = SeparatorStyle::kTwo;
  std::string sep, sep2;

  // --version as LLaVA's train.py resolves it: a conv_templates key; "mmtag" is short for v1_mmtag.
  // Unknown names are an error here (LLaVA silently falls back to vicuna_v1; we name the choices).
  static const ConversationTemplate& get(const std::string& version);
  static std::vector<std::string> names();
  bool wraps_image_tags() const { return version.find("mmtag") != std::string::npos; }
};

struct Turn {
  bool from_human = true;
  std::string value;
};

// Renders the whole dialogue (Conversation.get_prompt()) for the TWO, LLAMA_2, MPT and CHATML styles
// (CHATML: LLaVA-NeXT's conversation.py, the qwen_1_5 template). PLAIN is rendered by the example builder
// (it discards the human text).
std::string render_prompt(const ConversationTemplate& tmpl, const std::vector<Turn>& turns);

// LLaVA's inference prompt (conv.append_message per turn, then append_message(roles[1], None)): the turns up
// to and including the last human turn; a final answer is dropped (returned in *dropped_answer, "" if none)
// and earlier answers stay as history. Empty when there is no human turn.
std::vector<Turn> generation_turns(const std::vector<Turn>& turns, std::string* dropped_answer = nullptr);
// get_prompt() of those turns followed by the assistant's empty turn: "... ASSISTANT:" for v1, "... [/INST]"
// for llama_2, "...<|im_start|>assistant\n" for chatml. Not for the plain template (the example builder's).
std::string render_generation_prompt(const ConversationTemplate& tmpl, const std::vector<Turn>& turns);

enum class ImagePlacement { kFront, kInline, kNext };

// Counts "<image>" occurrences.
int count_image_markers(const std::string& text);

// Applies the marker rules to every turn for a sample with num_images images:
//  - no marker anywhere and num_images > 0: markers prepended to the first human turn;
//  - kFront: each turn with n markers becomes ("<image>\n" * n + rest.strip()).strip();
//  - kInline: markers stay where they are;
//  - kNext (LLaVA-NeXT's preprocess_multimodal): a turn with exactly one marker that does not start with it
//    becomes ("<image>\n" + rest.strip()).strip(); turns with several markers stay as written;
//  - mmtag templates wrap each marker as <Image><image></Image> (kNext: only in a rewritten turn, as there).
// Returns an empty string on success, else the reason (marker count != image count).
std::string place_image_markers(std::vector<Turn>& turns, int num_images, ImagePlacement placement,
                                bool wrap_mmtag);

}  // namespace llava
