#include "llava/dataset_index.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "llava/error.h"

namespace llava {
namespace {

// ---- cache file layout (dataset_index.h)

constexpr char kMagic[8] = {'L', 'L', 'V', 'I', 'D', 'X', '0', '1'};
constexpr uint64_t kEndianMark = 0x0102030405060708ull;

struct CacheHeader {
  char magic[8];
  uint32_t version;
  uint32_t format;
  uint64_t data_size;
  int64_t data_mtime_ns;
  uint64_t count;
  uint64_t path_bytes;
  uint64_t id_pool_bytes;
  uint64_t checksum;  // of every byte after the header
  uint64_t endian_mark;
  uint8_t reserved[56];
};
static_assert(sizeof(CacheHeader) == 128, "the cache header is 128 bytes");

size_t pad8(size_t n) { return (n + 7) / 8 * 8; }

struct Layout {  // byte offsets of the parts after the header
  size_t path, begin, id_end, length, modality, images, id_pool, total;
  Layout(size_t path_bytes, size_t n, size_t pool_bytes) {
    path = sizeof(CacheHeader);
    begin = path + pad8(path_bytes);
    id_end = begin + 8 * n;
    length = id_end + 8 * n;
    modality = length + 4 * n;
    images = modality + 4 * n;
    id_pool = pad8(images + 4 * n);
    total = id_pool + pool_bytes;
  }
};

// A 64-bit checksum fed in pieces of any size (whole 8-byte words mixed, the tail byte by byte).
class Checksum {
 public:
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0 && fill_ > 0) {
      add_byte(*p++);
      --n;
    }
    for (; n >= 8; p += 8, n -= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      mix(w);
    }
    while (n-- > 0) add_byte(*p++);
  }
  uint64_t value() const {
    uint64_t h = h_;
    if (fill_ > 0) h = (h ^ partial_ ^ fill_) * 0x9e3779b97f4a7c15ull;
    return h ^ (h >> 29);
  }

 private:
  void mix(uint64_t w) {
    h_ ^= w * 0xbf58476d1ce4e5b9ull;
    h_ = ((h_ << 31) | (h_ >> 33)) * 0x94d049bb133111ebull;
  }
  void add_byte(uint8_t b) {
    partial_ |= static_cast<uint64_t>(b) << (8 * fill_);
    if (++fill_ == 8) {
      mix(partial_);
      partial_ = 0;
      fill_ = 0;
    }
  }
  uint64_t h_ = 0x243f6a8885a308d3ull, partial_ = 0;
  unsigned fill_ = 0;
};

}  // namespace

DataFormat data_format_of(const std::string& path) {
  const std::string ext = ".jsonl";
  return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0
             ? DataFormat::kJsonLines
             : DataFormat::kJsonList;
}

void DatasetIndex::point_at_columns() {
  const Columns& c = *owned_;
  count_ = c.begin.size();
  begin_ = c.begin.data();
  id_end_ = c.id_end.data();
  length_ = c.length.data();
  modality_ = c.modality.data();
  images_ = c.images.data();
  id_pool_ = c.id_pool.data();
}

// ---- the cache

void DatasetIndex::write_cache(const std::string& cache_path, const MappedFile& data, DataFormat format) const {
  const std::string& path = data.real_path();
  const Layout layout(path.size(), count_, id_pool_bytes());
  CacheHeader h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kVersion;
  h.format = static_cast<uint32_t>(format);
  h.data_size = data.stamp().size;
  h.data_mtime_ns = data.stamp().mtime_ns;
  h.count = count_;
  h.path_bytes = path.size();
  h.id_pool_bytes = id_pool_bytes();
  h.endian_mark = kEndianMark;
  const std::vector<char> zeros(8, 0);
  struct Part {
    const void* data;
    size_t size;
  };
  const Part parts[] = {{path.data(), path.size()},
                        {zeros.data(), pad8(path.size()) - path.size()},
                        {begin_, 8 * count_},
                        {id_end_, 8 * count_},
                        {length_, 4 * count_},
                        {modality_, 4 * count_},
                        {images_, 4 * count_},
                        {zeros.data(), layout.id_pool - (layout.images + 4 * count_)},
                        {id_pool_, id_pool_bytes()}};
  Checksum sum;
  for (const Part& p : parts) sum.add(p.data, p.size);
  h.checksum = sum.value();

  std::random_device rd;
  const std::string tmp = cache_path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd());
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(cache_path + ": cannot write the index cache: " + std::strerror(errno));
  bool ok = std::fwrite(&h, sizeof h, 1, f) == 1;
  for (const Part& p : parts) ok = ok && (p.size == 0 || std::fwrite(p.data, p.size, 1, f) == 1);
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), cache_path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    std::remove(tmp.c_str());
    throw Error(cache_path + ": cannot write the index cache: " + reason);
  }
}

std::optional<DatasetIndex> DatasetIndex::load_cache(const std::string& cache_path, const MappedFile& data,
                                                     DataFormat format, std::string& why_not) {
  if (::access(cache_path.c_str(), F_OK) != 0) {
    why_not = "no cache file";
    return std::nullopt;
  }
  std::shared_ptr<const MappedFile> file;
  try {
    file = MappedFile::open(cache_path);
  } catch (const Error& e) {
    why_not = std::string("unreadable: ") + e.what();
    return std::nullopt;
  }
  CacheHeader h;
  if (file->size() < sizeof h) {
    why_not = "corrupt: " + std::to_string(file->size()) + " bytes, shorter than its header";
    return std::nullopt;
  }
  std::memcpy(&h, file->data(), sizeof h);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.endian_mark != kEndianMark) {
    why_not = "corrupt: not an index cache of this build (bad magic)";
    return std::nullopt;
  }
  if (h.version != kVersion) {
    why_not = "index version " + std::to_string(h.version) + ", this build reads " + std::to_string(kVersion);
    return std::nullopt;
  }
  const std::string& path = data.real_path();
  const FileStamp cached{h.data_size, h.data_mtime_ns};
  const uint64_t n = h.count;
  const bool sizes_fit = h.path_bytes < (1u << 20) && n < (uint64_t(1) << 40) && h.id_pool_bytes < (uint64_t(1) << 44);
  if (!sizes_fit || Layout(h.path_bytes, n, h.id_pool_bytes).total != file->size()) {
    why_not = "corrupt: " + std::to_string(file->size()) + " bytes do not match the header";
    return std::nullopt;
  }
  const Layout layout(h.path_bytes, n, h.id_pool_bytes);
  if (std::string_view(file->data() + layout.path, h.path_bytes) != path) {
    why_not = "made for another file (" + std::string(file->data() + layout.path, h.path_bytes) + ")";
    return std::nullopt;
  }
  if (cached != data.stamp()) {
    why_not = "the data file changed (" + describe_change(cached, data.stamp()) + ")";
    return std::nullopt;
  }
  if (h.format != static_cast<uint32_t>(format)) {
    why_not = "made for another format";
    return std::nullopt;
  }
  Checksum sum;
  sum.add(file->data() + sizeof h, file->size() - sizeof h);
  if (sum.value() != h.checksum) {
    why_not = "corrupt: checksum mismatch";
    return std::nullopt;
  }
  DatasetIndex index;
  index.cache_ = file;
  index.count_ = n;
  const char* base = file->data();
  index.begin_ = reinterpret_cast<const uint64_t*>(base + layout.begin);
  index.id_end_ = reinterpret_cast<const uint64_t*>(base + layout.id_end);
  index.length_ = reinterpret_cast<const uint32_t*>(base + layout.length);
  index.modality_ = reinterpret_cast<const int32_t*>(base + layout.modality);
  index.images_ = reinterpret_cast<const int32_t*>(base + layout.images);
  index.id_pool_ = base + layout.id_pool;
  // what a checksum cannot promise: ranges inside the data file, ids inside the pool
  for (size_t i = 0; i < n; ++i) {
    if (index.begin_[i] + index.length_[i] > data.size() || index.id_end_[i] > h.id_pool_bytes ||
        (i > 0 && index.id_end_[i] < index.id_end_[i - 1])) {
      why_not = "corrupt: entry " + std::to_string(i) + " points outside the data file or the id pool";
      return std::nullopt;
    }
  }
  // The checks read every page; hand them back (they stay in the page cache): a start then holds only the
  // columns its sampler and batches touch.
  file->release(0, file->size());
  return index;
}

void DatasetIndex::release_pages() const {
  if (cache_) cache_->release(0, cache_->size());
}

}  // namespace llava
