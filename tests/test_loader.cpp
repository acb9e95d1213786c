// Collate and the prefetching loader: shapes, padding, and order independent of the worker count.
#include <gtest/gtest.h>

#include "llava/error.h"
#include "llava/sampler.h"
#include "llava/train/loader.h"
#include "test_data_support.h"

using namespace llava;

namespace {

struct Fixture {
  std::unique_ptr<LlamaTokenizer> tok;
  ExampleOptions opt;
  std::unique_ptr<Dataset> ds;
};

Fixture make(int n_samples, bool with_bad) {
  const auto& d = llava::testing::tiny_data_dir();
  Fixture f;
  f.tok = std::make_unique<LlamaTokenizer>(LlamaTokenizer::from_dir(d.model_dir));
  f.opt.tokenizer = f.tok.get();
  f.opt.conversation = &ConversationTemplate::get("v1");
  f.opt.image_feature_positions = 4;
  f.opt.image_config = ImageProcessorConfig::clip_defaults(28);
  f.opt.model_max_length = 512;
  std::string text = "[";
  for (int i = 0; i < n_samples; ++i) {
    int n_img = i % 4;  // 0..3 images
    std::string imgs, markers;
    for (int k = 0; k < n_img; ++k) {
      imgs += std::string(k ? ", " : "") + ((i + k) % 2 ? "\"a.png\"" : "\"b.png\"");
      markers += "<image> ";
    }
    if (with_bad && i == 5) imgs = "\"missing.png\"", n_img = 1, markers = "<image>";
    text += std::string(i ? "," : "") + "{\"id\": \"s" + std::to_string(i) + "\", " +
            (n_img ? "\"image\": [" + imgs + "], " : "") + "\"conversations\": [{\"from\": \"human\", \"value\": \"" +
            markers + "what shape " + std::string(i % 5, 'x') + "\"}, {\"from\": \"gpt\", \"value\": \"red circle\"}]}";
  }
  text += "]";
  f.ds = std::make_unique<Dataset>(Dataset::from_text(text, d.image_dir));
  return f;
}

std::vector<Batch> run_epoch(const Fixture& f, int workers, int batch_size, uint64_t seed) {
  SamplerOptions so;
  so.seed = seed;
  so.batch_size = batch_size;
  std::vector<int32_t> lengths;
  for (size_t i = 0; i < f.ds->size(); ++i) lengths.push_back(f.ds->modality_length(i));
  Sampler sampler(lengths, so);
  LoaderOptions lo;
  lo.num_workers = workers;
  DataLoader loader(*f.ds, f.opt, sampler.rank_batches(0), lo);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

}  // namespace

TEST(Collate, PadsRightAndConcatenatesImagesInSampleOrder) {
  Fixture f = make(4, false);
  Batch b = build_batch(*f.ds, f.opt, {1, 0, 3}, 0);
  ASSERT_EQ(b.size(), 3);
  const LlavaInputs& in = b.inputs;
  EXPECT_EQ(in.image_counts, (std::vector<int64_t>{1, 0, 3}));
  ASSERT_TRUE(in.pixel_values.defined());
  EXPECT_EQ(in.pixel_values.sizes(), (std::vector<int64_t>{4, 3, 28, 28}));
  EXPECT_EQ(in.input_ids.dim(), 2);
  const int64_t T = in.input_ids.size(1);
  for (int64_t i = 0; i < 3; ++i) {
    Example e = build_example(f.ds->sample(b.sample_indices[i]), f.opt);
    int64_t len = static_cast<int64_t>(e.input_ids.size());
    EXPECT_EQ(in.attention_mask[i].sum().item<int64_t>(), len);
    for (int64_t t = len; t < T; ++t) {
      EXPECT_EQ(in.input_ids[i][t].item<int64_t>(), 0);
      EXPECT_EQ(in.labels[i][t].item<int64_t>(), kIgnoreIndex);
    }
  }
  // sample 3's images come after sample 1's, in marker order
  Example e3 = build_example(f.ds->sample(3), f.opt);
  EXPECT_EQ(in.pixel_values[1][0][0][0].item<float>(), e3.pixels[0].data[0]);
}

TEST(Loader, SameBatchesWhateverTheWorkerCount) {
  Fixture f = make(37, false);
  auto ref = run_epoch(f, 0, 4, 11);
  ASSERT_EQ(ref.size(), 10u);
  for (int workers : {1, 2, 3}) {
    auto got = run_epoch(f, workers, 4, 11);
    ASSERT_EQ(got.size(), ref.size());
    for (size_t k = 0; k < ref.size(); ++k) {
      EXPECT_EQ(got[k].sample_indices, ref[k].sample_indices) << "workers " << workers << " batch " << k;
      EXPECT_TRUE(torch::equal(got[k].inputs.input_ids, ref[k].inputs.input_ids));
      EXPECT_TRUE(torch::equal(got[k].inputs.labels, ref[k].inputs.labels));
      EXPECT_EQ(got[k].inputs.pixel_values.defined(), ref[k].inputs.pixel_values.defined());
      if (ref[k].inputs.pixel_values.defined()) {
        EXPECT_TRUE(torch::equal(got[k].inputs.pixel_values, ref[k].inputs.pixel_values));
      }
    }
  }
}

TEST(Loader, BadSamplesAreSkippedAndCountedOrFail) {
  Fixture f = make(8, true);
  auto batches = run_epoch(f, 2, 8, 1);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].size(), 7);
  EXPECT_EQ(batches[0].skipped, 1);
  ASSERT_EQ(batches[0].errors.size(), 1u);
  EXPECT_NE(batches[0].errors[0].find("sample 5 (id 's5')"), std::string::npos) << batches[0].errors[0];

  LoaderOptions lo;
  lo.fail_on_bad_sample = true;
  DataLoader loader(*f.ds, f.opt, {{0, 5, 1}}, lo);
  Batch b;
  EXPECT_THROW(loader.next(b), Error);
}

// A data file changed in place under the run is not a bad sample to skip: build_batch and the loader
// (from any worker) stop with the error that says so.
TEST(Loader, ChangedDataFileStopsTheRunFromAnyWorker) {
  const auto& d = llava::testing::tiny_data_dir();
  Fixture f = make(6, false);
  const std::string path = llava::testing::temp_dir("loader_changed") + "/data.json";
  std::string text = "[";
  for (int i = 0; i < 6; ++i)
    text += std::string(i ? "," : "") + "{\"id\": \"s" + std::to_string(i) +
            "\", \"conversations\": [{\"from\": \"human\", \"value\": \"what\"}, {\"from\": \"gpt\", \"value\": \"red\"}]}";
  std::ofstream(path) << text << "]";
  DatasetOpenOptions quiet;
  quiet.log = [](const std::string&) {};
  Dataset ds = Dataset::open(path, d.image_dir, quiet);
  EXPECT_EQ(build_batch(ds, f.opt, {0, 1}, 0).size(), 2);
  std::ofstream(path, std::ios::app) << "\n";  // the same file, one byte longer
  EXPECT_THROW(build_batch(ds, f.opt, {0, 1}, 0), DataFileChanged);
  for (int workers : {0, 2}) {
    LoaderOptions lo;
    lo.num_workers = workers;
    DataLoader loader(ds, f.opt, {{0, 1}, {2, 3}, {4, 5}}, lo);
    Batch b;
    try {
      loader.next(b);
      FAIL() << "workers " << workers << ": no error";
    } catch (const DataFileChanged& e) {
      EXPECT_NE(std::string(e.what()).find("the data file changed while in use"), std::string::npos) << e.what();
    }
  }
}
