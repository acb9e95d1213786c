#pragma once
// The training data: a JSON list in LLaVA's format, JSON Lines (.jsonl, one sample per line), or a data
// mixture of such files (.yaml, data_mixture.h). Each file is mapped, indexed by one scan (byte range, id,
// image count, modality length per sample: dataset_index.h) and parsed sample by sample when the sampler
// asks, straight from the mapped bytes (lazy, as LLaVA's LazySupervisedDataset). Memory does not grow with
// the size of the files: the index is ~28 bytes per sample plus its id, and pages read are handed back.
// Validation of a sample's shape happens in sample(); images are only named here.
//
// Index cache. With DatasetOpenOptions::cache_dir, each file's index is kept in
// <cache_dir>/<file name>.<hash of its absolute path>.idx, keyed by path, size, modification time and
// DatasetIndex::kVersion, and mapped in place on the next start (restart, resume). A stale or corrupt
// cache is rebuilt with a line saying why.
//
// Several processes (ranks) starting on the same data: the one that builds calls
//   Dataset::open(path, folder, {cache_dir, /*build_cache=*/true})
// and the others, after a barrier, call open(..., build_cache=false): they map the cache rank 0 wrote
// (sharing its pages). Without a usable cache (none written yet, a cache folder other ranks cannot see)
// a build_cache=false open scans the file in memory and says so; it never writes. Caches are written
// atomically, so processes that all open with build_cache=true are still correct, just slower.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "llava/conversation.h"
#include "llava/error.h"

namespace llava {

class MappedFile;
class DatasetIndex;

struct ImageRef {
  enum class Kind { kPath, kInline };  // kInline: base64 in the JSON, decoded straight from the file's bytes
  Kind kind = Kind::kPath;
  std::string path;            // resolved path (kPath)
  std::string where;           // "image[1]", "images[0]": for error messages
  std::vector<uint8_t> bytes;  // encoded image file bytes (kInline)
};

struct Sample {
  int64_t index = 0;
  std::string id;
  std::vector<Turn> turns;  // leading non-human turns dropped, roles alternate human/gpt
  std::vector<ImageRef> images;  // `image` entries first, then `images`
};

// The data file differs from its index (it was changed in place while the run used it): fatal for the
// run, never a "bad sample". (A file replaced by a new one, e.g. written elsewhere and renamed over it,
// is no change for the run: the mapping keeps the old file, which its index describes; the next start
// indexes the new one.)
class DataFileChanged : public Error {
 public:
  using Error::Error;
};

struct DatasetOpenOptions {
  std::string cache_dir;     // where index caches live (created when missing); empty: no cache
  bool build_cache = true;   // false: only map caches another process wrote (see above)
  uint64_t seed = 42;        // the run's seed: a mixture's random:N% draws with it
  std::function<void(const std::string&)> log;  // lines about caches and mixtures; empty: std::cerr
};

// One data set of the run: a mixture entry, or the whole --data_path.
struct DatasetPart {
  std::string path;               // the data file
  std::string image_folder;       // what its relative image paths are joined to
  std::string sampling_strategy;  // "all" for a plain --data_path
  size_t first = 0, count = 0;    // its samples are the dataset's [first, first + count)
  size_t file_samples = 0;        // samples in the file
};

class Dataset {
 public:
  // Opens a .json list, a .jsonl file or a .yaml mixture. Invalid JSON is fatal: llava::Error with file,
  // line, column and sample index. So are a truncated file, a mixture entry that does not exist and a
  // sampling percentage outside 0-100 (each naming the file).
  static Dataset open(const std::string& path, const std::string& image_folder, const DatasetOpenOptions& options = {});
  // From text in memory (tests, demo): a JSON list, or JSON Lines when `name` ends in .jsonl.
  static Dataset from_text(std::string text, const std::string& image_folder, const std::string& name = "<memory>");

  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // The sample's id as a string ("?" when it has none), for messages even about malformed samples.
  std::string id(size_t i) const;
  // LLaVA's modality_lengths: word count of all turns, positive with images, negative without.
  int32_t modality_length(size_t i) const;
  bool has_images(size_t i) const { return modality_length(i) > 0; }
  // How many images the sample names (`image` and `images` entries), as counted when indexing.
  int32_t image_count(size_t i) const;

  // After a pass over every sample's lengths (the sampler's copy): the index caches' pages go back.
  void release_index_pages() const;

  // Generation prompts (generate): a conversation may be a single human turn. Training needs an answer, so
  // by default such a sample is malformed.
  void set_allow_unanswered(bool allow) { allow_unanswered_ = allow; }

  // The data sets in order (one for a plain file), and which one sample i belongs to.
  const std::vector<DatasetPart>& parts() const { return parts_; }
  size_t part_of(size_t i) const;

  // Parses and validates sample i from the mapped file. Throws llava::Error "sample I (id 'X'): reason" for a
  // malformed sample (not an object, no conversations, wrong roles, non-string values, bad image entries),
  // DataFileChanged when the file's size or modification time no longer match its index, std::out_of_range
  // for i >= size(). Thread-safe.
  Sample sample(size_t i) const;

 private:
  struct Source;  // one data file: its bytes and index
  struct Rows {   // the rows a part takes from its source: [first_row, +count) or `rows`
    std::shared_ptr<const Source> source;
    uint64_t first_row = 0;
    std::vector<uint32_t> rows;
  };
  struct Location {
    const Source* source;
    uint64_t row;  // in the source's index
    size_t part;
  };
  Location locate(size_t i) const;
  void add_part(std::shared_ptr<const Source> source, DatasetPart part, Rows rows);

  std::string path_;
  size_t size_ = 0;
  std::vector<DatasetPart> parts_;
  std::vector<Rows> rows_;  // one per part
  bool allow_unanswered_ = false;
};

// true when bytes start like an image file we can decode (JPEG, PNG, GIF, BMP, ...).
bool looks_like_image(const uint8_t* data, size_t size);

}  // namespace llava
