#pragma once
// The index of one data file (a JSON list, or JSON Lines): per sample its byte range, its id, how many
// images it names and LLaVA's modality length, found by ONE scan of the file and kept as flat columns
// (28 bytes per sample plus its id in one string pool). The columns are what the index cache file holds,
// so a cached index is used in place from the mapped cache (processes that map it share its pages).
//
// Cache file (little-endian): a 128-byte header {magic "LLVIDX01", version, data file size, mtime (ns),
// format, sample count, path length, id pool size, FNV-style checksum of everything after the header},
// the data file's absolute path, then the columns begin[u64], id_end[u64], length[u32],
// modality_length[i32], image_count[i32] (n each), then the id pool. A cache is used only when its
// version, path, size, mtime and format match the data file and its checksum holds.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "llava/mapped_file.h"

namespace llava {

enum class DataFormat : uint32_t { kJsonList = 1, kJsonLines = 2 };
// A `.jsonl` file holds one sample per line; anything else is a JSON list (LLaVA's format).
DataFormat data_format_of(const std::string& path);

class DatasetIndex {
 public:
  static constexpr uint32_t kVersion = 1;  // bump when the scan's results or the layout change

  // One scan of the file (src/data/dataset_scan.cpp): the calling thread finds the samples' byte ranges
  // and hands them out in chunks to reader threads (up to 8 threads in all) that validate and measure
  // them. Invalid JSON throws llava::Error "PATH: invalid JSON at line L, column C: sample N: reason" for
  // the first problem in the file; so do a truncated file, and a file that changes while it is scanned.
  // The pages read are handed back as the scan goes (the resident set does not grow with the file).
  static DatasetIndex scan(const MappedFile& file, DataFormat format);

  // The cache for `data`, when `cache_path` holds one that matches it; else nullopt and the reason
  // ("no cache file", "the data file changed: ...", "index version 0, this build reads 1", "corrupt: ...").
  static std::optional<DatasetIndex> load_cache(const std::string& cache_path, const MappedFile& data,
                                                DataFormat format, std::string& why_not);
  // Writes the cache for `data` atomically (a temporary file renamed into place: a reader never sees
  // half a cache, and processes writing the same cache at once leave one complete file). Throws
  // llava::Error naming the path when it cannot be written.
  void write_cache(const std::string& cache_path, const MappedFile& data, DataFormat format) const;

  size_t size() const { return count_; }
  uint64_t begin(size_t i) const { return begin_[i]; }
  uint32_t length(size_t i) const { return length_[i]; }
  int32_t modality_length(size_t i) const { return modality_[i]; }
  int32_t image_count(size_t i) const { return images_[i]; }
  std::string_view id(size_t i) const {
    const uint64_t from = i == 0 ? 0 : id_end_[i - 1];
    return {id_pool_ + from, static_cast<size_t>(id_end_[i] - from)};
  }
  bool from_cache() const { return cache_ != nullptr; }
  // Hands the mapped cache's pages back (they stay in the page cache and come back when touched): after a
  // pass over every sample's lengths, what stays resident is what the batches touch. Nothing for a scan.
  void release_pages() const;

 private:
  struct Columns {  // what a scan builds
    std::vector<uint64_t> begin, id_end;
    std::vector<uint32_t> length;
    std::vector<int32_t> modality, images;
    std::string id_pool;
  };
  void point_at_columns();
  size_t id_pool_bytes() const { return count_ == 0 ? 0 : static_cast<size_t>(id_end_[count_ - 1]); }
  class Scanner;

  std::shared_ptr<Columns> owned_;            // scanned, or
  std::shared_ptr<const MappedFile> cache_;   // mapped from the cache file
  size_t count_ = 0;
  const uint64_t* begin_ = nullptr;
  const uint64_t* id_end_ = nullptr;
  const uint32_t* length_ = nullptr;
  const int32_t* modality_ = nullptr;
  const int32_t* images_ = nullptr;
  const char* id_pool_ = nullptr;
};

}  // namespace llava
