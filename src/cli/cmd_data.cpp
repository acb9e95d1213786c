// Data subcommands: tokenize, preprocess, check-data, bench-data. None of them runs the model.
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "llava/error.h"
#include "llava/pipeline.h"
#include "llava/safetensors.h"
#include "llava/train/loader.h"

namespace llava::cli {
using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Writes lines to --output, or stdout when it is empty.
class LineWriter {
 public:
  explicit LineWriter(const std::string& path) {
    if (!path.empty()) {
      file_.open(path);
      if (!file_) throw Error(path + ": cannot write");
    }
  }
  void write(const json& j) { (file_.is_open() ? static_cast<std::ostream&>(file_) : std::cout) << dump(j) << "\n"; }

 private:
  std::ofstream file_;
};

size_t sample_limit(const Options& o, size_t n) {
  return o.max_samples >= 0 ? std::min(n, static_cast<size_t>(o.max_samples)) : n;
}

// A short name for what is wrong with a sample, for check-data's counts.
std::string problem_kind(const std::string& message) {
  static const std::vector<std::pair<const char*, const char*>> kinds = {
      {"marker", "image_marker_count"},     {"too long", "too_long"},
      {"cannot read image", "missing_image"}, {"neither base64", "bad_base64_or_missing_image"},
      {"not an image file", "not_a_file"},  {"is empty (0 bytes)", "empty_image_file"},
      {"data: URL", "bad_base64_or_missing_image"},
      {"role", "role_order"},               {"conversation", "conversation"},
      {"plain", "template"},                {"): image", "image_decode"},
      {"image[", "image_decode"},           {"images[", "image_decode"}};
  for (const auto& [needle, kind] : kinds)
    if (message.find(needle) != std::string::npos) return kind;
  return "malformed_sample";
}

// anyres: each image's (width, height), tiles (base included) and LLM positions; nothing otherwise.
void add_anyres_fields(const Example& e, json& line) {
  if (e.image_layouts.empty()) return;
  json sizes = json::array(), tiles = json::array(), positions = json::array();
  for (const AnyresImageLayout& l : e.image_layouts) {
    sizes.push_back({l.original.width, l.original.height});
    tiles.push_back(l.num_tiles);
    positions.push_back(l.positions);
  }
  line["image_sizes"] = sizes;
  line["image_tiles"] = tiles;
  line["image_positions"] = positions;
}

// Per data set of a mixture: how many of the samples walked were bad (and, for check-data, images).
struct PartCounts {
  size_t samples = 0, images = 0, bad = 0;
};

bool is_mixture(const Dataset& ds) { return ds.parts().size() > 1 || ds.parts()[0].path != ds.path(); }

void print_parts(std::ostream& out, const Dataset& ds, const std::vector<PartCounts>& counts, bool with_images) {
  if (!is_mixture(ds)) return;
  for (size_t k = 0; k < counts.size(); ++k) {
    const DatasetPart& p = ds.parts()[k];
    const PartCounts& c = counts[k];
    out << "  data set " << k << ": " << p.path << " (" << p.sampling_strategy << ": " << p.count << " of "
        << p.file_samples << " samples): " << c.samples << " samples, ";
    if (with_images) out << c.images << " images, ";
    out << (c.samples - c.bad) << " ok, " << c.bad << " bad\n";
  }
}

}  // namespace

int cmd_tokenize(const Options& o) {
  if (o.model_name_or_path.empty())
    throw Error("tokenize: --model_name_or_path (a directory with tokenizer.model or tokenizer.json) is required");
  std::optional<bool> legacy;
  if (!o.legacy.empty()) {
    if (o.legacy != "true" && o.legacy != "false" && o.legacy != "True" && o.legacy != "False")
      throw Error("--legacy expects true or false");
    legacy = o.legacy == "true" || o.legacy == "True";
  }
  const std::shared_ptr<const Tokenizer> tok = load_tokenizer(o.model_name_or_path, legacy);
  LineWriter out(o.output);
  auto emit = [&](const std::string& text, bool image_token) {
    std::vector<int> ids = image_token ? tok->encode_with_image_tokens(text, o.add_special_tokens)
                                       : tok->encode(text, o.add_special_tokens);
    json pieces = json::array();
    for (int id : ids) pieces.push_back(tok->id_to_piece(id));
    out.write({{"text", text}, {"ids", ids}, {"pieces", pieces}});
  };
  if (!o.input.empty()) {
    std::ifstream in(o.input);
    if (!in) throw Error(o.input + ": cannot open");
    std::string line;
    for (int n = 1; std::getline(in, line); ++n) {
      if (line.empty()) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception& e) {
        throw Error(o.input + ": line " + std::to_string(n) + ": bad JSON: " + e.what());
      }
      if (!j.is_object() || !j.contains("text") || !j["text"].is_string())
        throw Error(o.input + ": line " + std::to_string(n) + ": expected {\"text\": ...}");
      emit(j["text"].get<std::string>(), j.value("image_token", false));
    }
  } else if (o.set_keys.count("text")) {
    emit(o.text, false);
  } else {
    throw Error("tokenize: give --text or --input");
  }
  return 0;
}

// --save_pixels: what each sample feeds the vision tower, as preprocess computed it (build_example, the
// loader's own path), written at the end as one safetensors file. A sample's images are stacked into
// "sample<i>.pixel_values" [images, 3, H, W] (the fixture's naming) when they share a shape, as LLaVA's
// collator stacks them; else each is its own "sample<i>.image<k>.pixel_values" [3, H, W].
class PixelDump {
 public:
  // per_image: one tensor per image, [tiles, 3, S, S] (anyres: design.md's sample<i>.image<k>.pixel_values)
  PixelDump(std::string path, bool per_image) : path_(std::move(path)), per_image_(per_image) {}
  bool enabled() const { return !path_.empty(); }

  void add(size_t sample_index, const std::vector<PixelTensor>& images) {
    if (images.empty()) return;
    const std::string prefix = "sample" + std::to_string(sample_index);
    if (per_image_) {
      for (size_t k = 0; k < images.size(); ++k)
        entries_.push_back({prefix + ".image" + std::to_string(k) + ".pixel_values",
                            {images[k].tiles, images[k].channels, images[k].height, images[k].width}, images[k].data});
      return;
    }
    bool same_shape = true;
    for (const PixelTensor& t : images)
      same_shape = same_shape && t.channels == images[0].channels && t.height == images[0].height &&
                   t.width == images[0].width;
    if (same_shape) {
      Entry e{prefix + ".pixel_values", {static_cast<int64_t>(images.size()), images[0].channels, images[0].height,
                                         images[0].width}, {}};
      for (const PixelTensor& t : images) e.data.insert(e.data.end(), t.data.begin(), t.data.end());
      entries_.push_back(std::move(e));
      return;
    }
    for (size_t k = 0; k < images.size(); ++k)
      entries_.push_back({prefix + ".image" + std::to_string(k) + ".pixel_values",
                          {images[k].channels, images[k].height, images[k].width}, images[k].data});
  }

  void write() const {
    std::vector<TensorToWrite> tensors;
    for (const Entry& e : entries_)
      tensors.push_back({e.name, DType::F32, e.shape, e.data.data(), e.data.size() * sizeof(float)});
    write_safetensors(path_, std::move(tensors));
    std::cerr << "preprocess: pixel values of " << entries_.size() << " tensor(s) written to " << path_ << "\n";
  }

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    std::vector<float> data;  // CHW planes, image after image
  };
  std::string path_;
  bool per_image_;
  std::vector<Entry> entries_;
};

int cmd_preprocess(const Options& o) {
  auto p = make_data_pipeline(o, true);
  PixelDump pixels(o.save_pixels, p->example.anyres.has_value());
  ExampleOptions ex = p->example;
  ex.load_pixels = pixels.enabled();
  ex.check_images = true;  // a sample whose image does not decode is reported as an error here too
  LineWriter out(o.output);
  const Dataset& ds = *p->dataset;
  size_t n = sample_limit(o, ds.size()), bad = 0;
  std::vector<PartCounts> per_part(ds.parts().size());
  for (size_t i = 0; i < n; ++i) {
    PartCounts& part = per_part[ds.part_of(i)];
    ++part.samples;
    try {
      Example e = build_example(ds.sample(i), ex);
      if (!e.warning.empty()) std::cerr << e.warning << "\n";
      json line = {{"index", i},       {"id", e.id},         {"status", "ok"},
                   {"prompt", e.prompt}, {"input_ids", e.input_ids}, {"labels", e.labels},
                   {"num_images", e.num_images}, {"length_with_images", e.length_with_images}};
      add_anyres_fields(e, line);
      out.write(line);
      pixels.add(i, e.pixels);
    } catch (const DataFileChanged&) {
      throw;
    } catch (const Error& err) {
      ++bad;
      ++part.bad;
      out.write({{"index", i}, {"id", ds.id(i)}, {"status", "error"}, {"error", err.what()}});
      if (o.on_bad_sample == "fail") throw;
    }
  }
  if (pixels.enabled()) pixels.write();
  std::cerr << "preprocess: " << n << " samples, " << bad << " bad\n";
  print_parts(std::cerr, ds, per_part, false);
  return 0;
}

int cmd_check_data(const Options& o) {
  auto p = make_data_pipeline(o, true);
  ExampleOptions ex = p->example;
  ex.load_pixels = false;
  ex.check_images = true;
  const Dataset& ds = *p->dataset;
  size_t n = sample_limit(o, ds.size());
  std::map<std::string, std::vector<std::string>> problems;
  size_t mismatches = 0, images = 0, bad = 0, tiles = 0, budget_cut = 0;
  int most_positions = 0;
  std::vector<PartCounts> per_part(ds.parts().size());
  for (size_t i = 0; i < n; ++i) {
    PartCounts& part = per_part[ds.part_of(i)];
    ++part.samples;
    try {
      Example e = build_example(ds.sample(i), ex);
      images += e.num_images;
      if (e.warning.find("tokenization mismatch") != std::string::npos) ++mismatches;
      budget_cut += e.images_base_only > 0;
      for (const AnyresImageLayout& l : e.image_layouts) {
        tiles += l.num_tiles;
        most_positions = std::max(most_positions, l.positions);
      }
      part.images += e.num_images;
    } catch (const DataFileChanged&) {
      throw;
    } catch (const Error& err) {
      ++bad;
      ++part.bad;
      problems[problem_kind(err.what())].push_back(err.what());
    }
  }
  std::cout << "check-data: " << ds.path() << ": " << n << " samples, " << images << " images, " << (n - bad)
            << " ok, " << bad << " bad\n";
  if (ex.anyres)
    std::cout << "  anyres: " << tiles << " tiles, up to " << most_positions << " positions per image (at most "
              << anyres_max_image_positions(*ex.anyres) << " with these pinpoints), " << budget_cut
              << " sample(s) with images cut to their base tile by --max_tiles_per_sample\n";
  print_parts(std::cout, ds, per_part, true);
  if (mismatches)
    std::cout << "  warning: " << mismatches
              << " sample(s) with a tokenization mismatch (trained with every label masked, as LLaVA does)\n";
  for (const auto& [kind, messages] : problems) {
    std::cout << "  " << kind << ": " << messages.size() << "\n";
    for (size_t k = 0; k < messages.size() && k < 5; ++k) std::cout << "    " << messages[k] << "\n";
  }
  return bad ? 1 : 0;
}

int cmd_bench_data(const Options& o) {
  auto p = make_data_pipeline(o, true);
  const Dataset& ds = *p->dataset;
  size_t n = sample_limit(o, ds.size());
  std::vector<std::vector<int64_t>> batches;
  const int B = o.per_device_train_batch_size;
  for (size_t i = 0; i < n; i += B) {
    batches.emplace_back();
    for (size_t k = i; k < std::min(n, i + B); ++k) batches.back().push_back(static_cast<int64_t>(k));
  }
  LoaderOptions lo;
  lo.num_workers = o.dataloader_num_workers;
  lo.pad_id = p->tokenizer.pad_id();
  auto start = std::chrono::steady_clock::now();
  DataLoader loader(ds, p->example, std::move(batches), lo);
  Batch b;
  int64_t samples = 0, images = 0, skipped = 0;
  while (loader.next(b)) {
    samples += b.size();
    skipped += b.skipped;
    images += b.inputs.pixel_values.defined() ? b.inputs.pixel_values.size(0) : 0;
  }
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << dump({{"samples", samples}, {"images", images}, {"skipped", skipped}, {"seconds", s},
                     {"samples_per_s", samples / s}, {"images_per_s", images / s}})
            << "\n";
  return 0;
}

}  // namespace llava::cli
