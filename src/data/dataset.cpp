#include "llava/dataset.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <stdexcept>

#include "llava/data_mixture.h"
#include "llava/dataset_index.h"
#include "llava/mapped_file.h"
#include "sample_json.h"

namespace llava {
namespace fs = std::filesystem;

struct Dataset::Source {
  std::shared_ptr<const MappedFile> file;
  DatasetIndex index;
};

namespace {

using Log = std::function<void(const std::string&)>;

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

// <cache_dir>/<file name>.<16 hex digits of FNV-1a(absolute path)>.idx
std::string cache_file_for(const std::string& cache_dir, const MappedFile& file) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : file.real_path()) h = (h ^ c) * 0x100000001b3ull;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return (fs::path(cache_dir) / (fs::path(file.path()).filename().string() + "." + hex + ".idx")).string();
}

DatasetIndex scan_and_cache(const MappedFile& file, DataFormat format, const std::string& cache,
                            const DatasetOpenOptions& opt, const Log& log) {
  const auto t0 = std::chrono::steady_clock::now();
  DatasetIndex index = DatasetIndex::scan(file, format);
  const std::string done = "data index: " + file.path() + ": " + std::to_string(index.size()) + " samples indexed in " +
                           seconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  if (cache.empty() || !opt.build_cache) {
    log(done);
    return index;
  }
  try {
    fs::create_directories(opt.cache_dir);
    index.write_cache(cache, file, format);
  } catch (const std::exception& e) {
    log(done + "; the index cache could not be written (" + e.what() + "): the next start indexes again");
    return index;
  }
  log(done + "; cache " + cache);
  std::string why;
  if (auto mapped = DatasetIndex::load_cache(cache, file, format, why)) return std::move(*mapped);  // shared pages
  return index;
}

// Maps the data file and finds its index: the cache when it matches, else one scan (and a new cache).
std::shared_ptr<const MappedFile> open_file(const std::string& path, DatasetIndex& index,
                                            const DatasetOpenOptions& opt, const Log& log) {
  auto file = MappedFile::open(path);
  const DataFormat format = data_format_of(path);
  if (opt.cache_dir.empty()) {
    index = scan_and_cache(*file, format, "", opt, log);
    return file;
  }
  const std::string cache = cache_file_for(opt.cache_dir, *file);
  std::string why;
  if (auto cached = DatasetIndex::load_cache(cache, *file, format, why)) {
    index = std::move(*cached);
    log("data index: " + path + ": " + std::to_string(index.size()) + " samples (cache " + cache + ")");
    return file;
  }
  const std::string action = !opt.build_cache ? "; indexing in memory (this process does not write caches)"
                             : why == "no cache file" ? "; building it" : "; rebuilding it";
  log("data index: " + cache + ": " + why + action);
  index = scan_and_cache(*file, format, cache, opt, log);
  return file;
}

}  // namespace

bool looks_like_image(const uint8_t* d, size_t n) {
  auto starts = [&](const char* magic, size_t len) { return n >= len && std::memcmp(d, magic, len) == 0; };
  return starts("\xFF\xD8\xFF", 3) || starts("\x89PNG", 4) || starts("GIF8", 4) || starts("BM", 2) ||
         (starts("RIFF", 4) && n >= 12 && std::memcmp(d + 8, "WEBP", 4) == 0) || starts("P6", 2) ||
         starts("P5", 2) || starts("8BPS", 4) || starts("#?RADIANCE", 10) || starts("II*\0", 4) ||
         starts("MM\0*", 4) || starts("II+\0", 4) || starts("MM\0+", 4);  // TIFF, BigTIFF
}

Dataset Dataset::open(const std::string& path, const std::string& image_folder, const DatasetOpenOptions& options) {
  const Log log = options.log ? options.log : Log([](const std::string& line) { std::cerr << line << "\n"; });
  Dataset d;
  d.path_ = path;
  const std::string ext = fs::path(path).extension().string();
  if (ext != ".yaml" && ext != ".yml") {
    auto source = std::make_shared<Source>();
    source->file = open_file(path, source->index, options, log);
    const size_t n = source->index.size();
    d.add_part(source, {path, image_folder, "all", 0, n, n}, {source, 0, {}});
    return d;
  }
  const std::vector<MixtureEntry> entries = read_mixture(path);
  std::map<std::string, std::shared_ptr<const Source>> opened;  // a file listed twice is opened once
  for (size_t k = 0; k < entries.size(); ++k) {
    const MixtureEntry& e = entries[k];
    const std::string key = fs::weakly_canonical(e.json_path).string();
    std::shared_ptr<const Source>& source = opened[key];
    if (!source) {
      auto s = std::make_shared<Source>();
      s->file = open_file(e.json_path, s->index, options, log);
      source = s;
    }
    const size_t n = source->index.size();
    if (n > UINT32_MAX) throw Error(e.json_path + ": more than 2^32 samples in one file");
    RowSelection sel = select_rows(e.sampling_strategy, n, options.seed, k);
    DatasetPart part{e.json_path, e.image_folder.empty() ? image_folder : e.image_folder, e.sampling_strategy, 0,
                     static_cast<size_t>(sel.count), n};
    d.add_part(source, part, {source, sel.first, std::move(sel.rows)});
    log("data mixture " + path + ": " + e.written_path + " (" + e.sampling_strategy + "): " + std::to_string(sel.count) +
        " of " + std::to_string(n) + " samples");
  }
  log("data mixture " + path + ": " + std::to_string(entries.size()) + " data sets, " + std::to_string(d.size_) +
      " samples");
  return d;
}

Dataset Dataset::from_text(std::string text, const std::string& image_folder, const std::string& name) {
  auto source = std::make_shared<Source>();
  source->file = MappedFile::from_memory(std::move(text), name);
  source->index = DatasetIndex::scan(*source->file, data_format_of(name));
  Dataset d;
  d.path_ = name;
  const size_t n = source->index.size();
  d.add_part(source, {name, image_folder, "all", 0, n, n}, {source, 0, {}});
  return d;
}

void Dataset::add_part(std::shared_ptr<const Source> source, DatasetPart part, Rows rows) {
  part.first = size_;
  size_ += part.count;
  rows.source = std::move(source);
  parts_.push_back(std::move(part));
  rows_.push_back(std::move(rows));
}

void Dataset::release_index_pages() const {
  for (const Rows& r : rows_) r.source->index.release_pages();
}

size_t Dataset::part_of(size_t i) const {
  if (parts_.size() == 1) return 0;
  // the last part starting at or before i (an empty part shares its start with the next one)
  auto after = std::upper_bound(parts_.begin(), parts_.end(), i,
                                [](size_t v, const DatasetPart& p) { return v < p.first; });
  return static_cast<size_t>(after - parts_.begin()) - 1;
}

Dataset::Location Dataset::locate(size_t i) const {
  const size_t p = part_of(i);
  const Rows& r = rows_[p];
  const size_t k = i - parts_[p].first;
  return {r.source.get(), r.rows.empty() ? r.first_row + k : r.rows[k], p};
}

std::string Dataset::id(size_t i) const {
  const Location at = locate(i);
  return std::string(at.source->index.id(at.row));
}

int32_t Dataset::modality_length(size_t i) const {
  const Location at = locate(i);
  return at.source->index.modality_length(at.row);
}

int32_t Dataset::image_count(size_t i) const {
  const Location at = locate(i);
  return at.source->index.image_count(at.row);
}

Sample Dataset::sample(size_t i) const {
  if (i >= size_) throw std::out_of_range("sample " + std::to_string(i) + " of " + std::to_string(size_));
  const Location at = locate(i);
  const MappedFile& file = *at.source->file;
  const FileStamp now = file.current_stamp();
  if (now != file.stamp())
    throw DataFileChanged(file.path() + ": the data file changed while in use (" + describe_change(file.stamp(), now) +
                          "): its index no longer describes it; restart to index it again");
  const uint64_t begin = at.source->index.begin(at.row), length = at.source->index.length(at.row);
  const std::string id(at.source->index.id(at.row));
  struct Release {  // the sample's pages go back once it is read (they stay in the page cache)
    const MappedFile& file;
    uint64_t begin, end;
    ~Release() { file.release(begin, end); }
  } release{file, begin, begin + length};
  return sample_json::parse_sample(file.data() + begin, length, file.size() + MappedFile::kPadding - begin,
                                   static_cast<int64_t>(i), id, parts_[at.part].image_folder, allow_unanswered_);
}

}  // namespace llava
