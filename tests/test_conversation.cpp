#include <gtest/gtest.h>

#include "llava/conversation.h"
#include "llava/error.h"
#include "llava/text_util.h"

using namespace llava;

namespace {
std::vector<Turn> two_rounds() {
  return {{true, "<image>\nWhat is in the image?"}, {false, "A cat."}, {true, "What color is it?"}, {false, "Black."}};
}
}  // namespace

// Exact get_prompt() outputs quoted in llava-reference.md §2.3.
TEST(Conversation, VicunaV1MatchesLLaVA) {
  EXPECT_EQ(render_prompt(ConversationTemplate::get("v1"), two_rounds()),
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions. USER: <image>\nWhat is in the image? ASSISTANT: "
            "A cat.</s>USER: What color is it? ASSISTANT: Black.</s>");
  EXPECT_EQ(&ConversationTemplate::get("v1"), &ConversationTemplate::get("vicuna_v1"));
}

TEST(Conversation, LlavaLlama2MatchesLLaVA) {
  EXPECT_EQ(render_prompt(ConversationTemplate::get("llava_llama_2"), two_rounds()),
            "[INST] <<SYS>>\nYou are a helpful language and vision assistant. You are able to understand the visual "
            "content that the user provides, and assist the user with a variety of tasks using natural language.\n"
            "<</SYS>>\n\n<image>\nWhat is in the image? [/INST] A cat. </s><s>[INST] What color is it? [/INST] "
            "Black. </s>");
}

TEST(Conversation, Llama2UsesMetaSystemPrompt) {
  std::string p = render_prompt(ConversationTemplate::get("llama_2"), two_rounds());
  EXPECT_EQ(p.rfind("[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant.", 0), 0u) << p;
}

// llava-next-tiny README conventions 2 and 5 (LLaVA c121f04 conv_mistral_instruct / conv_chatml_direct).
TEST(Conversation, MistralInstructHasNoSystemBlockAndNoSeparatorBetweenRounds) {
  const ConversationTemplate& t = ConversationTemplate::get("mistral_instruct");
  EXPECT_EQ(t.style, SeparatorStyle::kLlama2);
  EXPECT_EQ(render_prompt(t, two_rounds()),
            "[INST] <image>\nWhat is in the image? [/INST] A cat. </s>[INST] What color is it? [/INST] Black. </s>");
}

TEST(Conversation, ChatmlDirectRendersImStartImEndAsText) {
  const ConversationTemplate& t = ConversationTemplate::get("chatml_direct");
  EXPECT_EQ(t.style, SeparatorStyle::kMpt);
  EXPECT_EQ(t.version, "mpt");
  EXPECT_EQ(render_prompt(t, two_rounds()),
            "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nWhat is in the image?"
            "<|im_end|><|im_start|>assistant\nA cat.<|im_end|><|im_start|>user\nWhat color is it?<|im_end|>"
            "<|im_start|>assistant\nBlack.<|im_end|>");
  // an empty final answer renders the bare role: the generation prompt
  std::vector<Turn> open = {{true, "hi"}, {false, ""}};
  EXPECT_EQ(render_prompt(t, open), "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\nhi"
                                    "<|im_end|><|im_start|>assistant\n");
  EXPECT_EQ(render_prompt(ConversationTemplate::get("mistral_direct"), two_rounds()), render_prompt(t, two_rounds()));
}

TEST(Conversation, MmtagSystemAndWrapping) {
  const ConversationTemplate* t = &ConversationTemplate::get("mmtag");
  EXPECT_NE(t->system.find("natural language.The visual content"), std::string::npos);
  std::vector<Turn> turns = {{true, "Look: <image> and <image>"}, {false, "ok"}};
  EXPECT_EQ(place_image_markers(turns, 2, ImagePlacement::kFront, t->wraps_image_tags()), "");
  EXPECT_EQ(turns[0].value, "<Image><image></Image>\n<Image><image></Image>\nLook:  and");
}

TEST(Conversation, EmptyAnswerRendersGenerationPrompt) {
  std::vector<Turn> turns = {{true, "hi"}, {false, ""}};
  std::string p = render_prompt(ConversationTemplate::get("v1"), turns);
  const std::string tail = "USER: hi ASSISTANT:";
  EXPECT_EQ(p.substr(p.size() - tail.size()), tail) << p;
}

TEST(Conversation, GenerationPromptKeepsHistoryAndDropsTheFinalAnswer) {
  // LLaVA inference: turns up to the last question, then append_message(roles[1], None).
  std::vector<Turn> turns = {{true, "q1"}, {false, "a1"}, {true, "q2"}, {false, "a2"}};
  std::string dropped;
  std::vector<Turn> kept = generation_turns(turns, &dropped);
  ASSERT_EQ(kept.size(), 3u);
  EXPECT_EQ(dropped, "a2");
  EXPECT_EQ(render_generation_prompt(ConversationTemplate::get("v1"), kept),
            ConversationTemplate::get("v1").system + " USER: q1 ASSISTANT: a1</s>USER: q2 ASSISTANT:");
  // LLAMA_2 skips the empty message: the prompt ends with the last [/INST]
  EXPECT_EQ(render_generation_prompt(ConversationTemplate::get("mistral_instruct"), kept),
            "[INST] q1 [/INST] a1 </s>[INST] q2 [/INST]");
  // MPT (chatml) ends with the bare assistant role
  const std::string chatml = render_generation_prompt(ConversationTemplate::get("chatml_direct"), kept);
  const std::string tail = "<|im_start|>user\nq2<|im_end|><|im_start|>assistant\n";
  EXPECT_EQ(chatml.substr(chatml.size() - tail.size()), tail) << chatml;
  // a sample that ends with a question keeps every turn; no human turn at all gives nothing
  EXPECT_EQ(generation_turns(kept, &dropped).size(), 3u);
  EXPECT_EQ(dropped, "");
  EXPECT_TRUE(generation_turns({{false, "a"}}).empty());
}

TEST(Conversation, UnknownVersionNamesTheChoices) {
  try {
    ConversationTemplate::get("vicuna_v2");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("vicuna_v1"), std::string::npos) << e.what();
  }
}

// Fixture README convention 1 / design.md §3.
TEST(Markers, FrontPlacementCountsRemovesAndRepeats) {
  std::vector<Turn> turns = {{true, "Here are three photos: <image>, <image> and <image>. What differs?"}, {false, "x"}};
  ASSERT_EQ(place_image_markers(turns, 3, ImagePlacement::kFront, false), "");
  EXPECT_EQ(turns[0].value, "<image>\n<image>\n<image>\nHere are three photos: ,  and . What differs?");
}

TEST(Markers, EveryTurnWithMarkersIsRewritten) {
  std::vector<Turn> turns = {{true, "First <image>"}, {false, "a"}, {true, "  <image> second  "}, {false, "b"}};
  ASSERT_EQ(place_image_markers(turns, 2, ImagePlacement::kFront, false), "");
  EXPECT_EQ(turns[0].value, "<image>\nFirst");
  EXPECT_EQ(turns[2].value, "<image>\nsecond");
}

TEST(Markers, MarkerOnlyTurnLosesTrailingNewline) {
  std::vector<Turn> turns = {{true, "<image>"}, {false, "a"}};
  ASSERT_EQ(place_image_markers(turns, 1, ImagePlacement::kFront, false), "");
  EXPECT_EQ(turns[0].value, "<image>");  // ("<image>\n" + "").strip()
}

TEST(Markers, NoMarkersArePrependedToFirstHumanTurn) {
  std::vector<Turn> turns = {{true, "Compare them."}, {false, "a"}};
  ASSERT_EQ(place_image_markers(turns, 2, ImagePlacement::kFront, false), "");
  EXPECT_EQ(turns[0].value, "<image>\n<image>\nCompare them.");
}

TEST(Markers, InlineKeepsPositions) {
  std::vector<Turn> turns = {{true, "A <image> then B <image>"}, {false, "a"}};
  ASSERT_EQ(place_image_markers(turns, 2, ImagePlacement::kInline, false), "");
  EXPECT_EQ(turns[0].value, "A <image> then B <image>");
}

TEST(Markers, CountMismatchIsReported) {
  std::vector<Turn> turns = {{true, "<image> <image>"}, {false, "a"}};
  std::string err = place_image_markers(turns, 3, ImagePlacement::kFront, false);
  EXPECT_NE(err.find("2 <image> marker(s) but the sample has 3 image(s)"), std::string::npos) << err;
  std::vector<Turn> text_only = {{true, "<image> hi"}, {false, "a"}};
  EXPECT_NE(place_image_markers(text_only, 0, ImagePlacement::kFront, false), "");
}

TEST(TextUtil, PythonSemantics) {
  EXPECT_EQ(python_strip(" \t\n x y \xC2\xA0\xE3\x80\x80"), "x y");  // NBSP, ideographic space are whitespace
  EXPECT_EQ(python_strip("\xE2\x80\x8Bx"), "\xE2\x80\x8Bx");         // zero-width space is not
  EXPECT_EQ(python_word_count("  a bc\n\td  "), 3);
  EXPECT_EQ(python_split("a</s>b</s>", "</s>"), (std::vector<std::string>{"a", "b", ""}));
  EXPECT_EQ(python_lstrip_chars("<s>s[INST]", "<s>"), "[INST]");
}
