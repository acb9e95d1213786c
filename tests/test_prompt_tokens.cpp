// The example builder's prompt tokenization (first chunk remembered) against the tokenizer's own
// encode / encode_with_image_tokens, and examples built with and without the shared cache.
#include <gtest/gtest.h>

#include <random>

#include "llava/conversation.h"
#include "llava/example.h"
#include "llava/prompt_tokens.h"
#include "test_data_support.h"

using namespace llava;

namespace {

std::string random_prompt(std::mt19937& g) {
  static const std::vector<std::string> pieces = {"A chat between", " USER: ", " ASSISTANT: ", "<image>", "<image>\n",
                                                  "</s>", "<s>", "red circle", " ", "  ", "\n", "\xe2\x96\x81x",
                                                  "what shape", "<unk>", "blue"};
  std::string s;
  const int n = static_cast<int>(g() % 10);
  for (int k = 0; k < n; ++k) s += pieces[g() % pieces.size()];
  return s;
}

}  // namespace

TEST(PromptTokens, SameIdsAsTheTokenizer) {
  const auto& d = llava::testing::tiny_data_dir();
  for (bool legacy : {false, true}) {
    LlamaTokenizer tok = LlamaTokenizer::from_dir(d.model_dir, legacy);
    PromptChunkCache cache(tok);
    std::mt19937 g(legacy ? 3 : 4);
    int with_images = 0;
    for (int k = 0; k < 2000; ++k) {
      const std::string text = random_prompt(g);
      PromptTokenizer tokens(tok, k % 2 ? &cache : nullptr);
      for (int use = 0; use < 2; ++use) {  // the second use of the same first chunk comes from memory
        ASSERT_EQ(tokens.encode(text, true), tok.encode_with_image_tokens(text)) << "legacy " << legacy << ": " << text;
        ASSERT_EQ(tokens.encode(text, false), tok.encode(text)) << "legacy " << legacy << ": " << text;
        ASSERT_EQ(tokens.length(text, true), tok.encode_with_image_tokens(text).size()) << text;
      }
      with_images += text.find("<image>") != std::string::npos;
    }
    std::printf("  legacy %d: 2000 prompts (%d with <image>) tokenized as the tokenizer does\n", legacy, with_images);
  }
}

TEST(PromptTokens, CacheOfAnotherTokenizerIsNotUsed) {
  const auto& d = llava::testing::tiny_data_dir();
  LlamaTokenizer a = LlamaTokenizer::from_dir(d.model_dir, false), b = LlamaTokenizer::from_dir(d.model_dir, true);
  PromptChunkCache cache_of_a(a);
  cache_of_a.add(" USER: ", {1, 2, 3});  // what a wrong cache would hand out
  PromptTokenizer tokens(b, &cache_of_a);
  EXPECT_EQ(tokens.encode(" USER: <image>", true), b.encode_with_image_tokens(" USER: <image>"));
}

// build_example with the shared cache gives the examples it gives without (many samples, both templates).
TEST(PromptTokens, ExamplesAreTheSameWithAndWithoutTheCache) {
  const auto& d = llava::testing::tiny_data_dir();
  LlamaTokenizer tok = LlamaTokenizer::from_dir(d.model_dir);
  ExampleOptions plain;
  plain.tokenizer = &tok;
  plain.image_feature_positions = 4;
  plain.image_config = ImageProcessorConfig::clip_defaults(28);
  plain.model_max_length = 512;
  plain.load_pixels = false;
  ExampleOptions cached = plain;
  cached.prompt_cache = std::make_shared<PromptChunkCache>(tok);
  int compared = 0;
  for (const char* version : {"v1", "llava_llama_2", "mmtag", "plain"}) {
    plain.conversation = cached.conversation = &ConversationTemplate::get(version);
    for (int k = 0; k < 40; ++k) {
      Sample s;
      s.index = k;
      s.id = "s" + std::to_string(k);
      const int rounds = 1 + k % 3, images = (k % 4 == 0 || std::string(version) == "plain") ? 1 + k % 2 : 0;
      for (int r = 0; r < (std::string(version) == "plain" ? 1 : rounds); ++r) {
        s.turns.push_back({true, (r == 0 && k % 3 == 0 ? std::string("what shape ") : std::string("what colour")) +
                                     std::string(k % 5, 'x')});
        s.turns.push_back({false, "red circle " + std::to_string(r)});
      }
      for (int m = 0; m < images; ++m) s.images.push_back({ImageRef::Kind::kPath, "unused.png", "image", {}});
      const Example a = build_example(s, plain), b = build_example(s, cached);
      ASSERT_EQ(a.input_ids, b.input_ids) << version << " sample " << k;
      ASSERT_EQ(a.labels, b.labels) << version << " sample " << k;
      ASSERT_EQ(a.warning, b.warning) << version << " sample " << k;
      ++compared;
    }
  }
  std::printf("  %d examples identical with and without the cache\n", compared);
}
