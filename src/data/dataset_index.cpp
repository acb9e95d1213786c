#include "llava/dataset_index.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <random>
#include <thread>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "llava/error.h"
#include "llava/text_util.h"
#include "sample_json.h"

namespace llava {
namespace {

bool is_ws(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// The characters the element scan looks at, as bit masks over a 64-byte block (bit k: byte k).
struct BlockMasks {
  uint64_t quote = 0, backslash = 0, open = 0, close = 0, comma = 0;
};

BlockMasks block_masks(const char* p) {
  BlockMasks m;
#if defined(__SSE2__)
  for (int k = 0; k < 64; k += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k));
    auto bits = [&](char c) {
      return static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(c))))) << k;
    };
    m.quote |= bits('"');
    m.backslash |= bits('\\');
    m.open |= bits('{') | bits('[');
    m.close |= bits('}') | bits(']');
    m.comma |= bits(',');
  }
#else
  for (int k = 0; k < 64; ++k) {
    const uint64_t bit = uint64_t(1) << k;
    const char c = p[k];
    if (c == '"') m.quote |= bit;
    else if (c == '\\') m.backslash |= bit;
    else if (c == '{' || c == '[') m.open |= bit;
    else if (c == '}' || c == ']') m.close |= bit;
    else if (c == ',') m.comma |= bit;
  }
#endif
  return m;
}

// Bit k = XOR of bits 0..k: set from an opening quote up to (not including) its closing quote.
uint64_t prefix_xor(uint64_t x) {
  x ^= x << 1;
  x ^= x << 2;
  x ^= x << 4;
  x ^= x << 8;
  x ^= x << 16;
  x ^= x << 32;
  return x;
}

// Offset of the ',' or ']' that ends the list element starting at i, or n when the file ends first.
// 64 bytes at a time: quotes not escaped by a backslash open and close strings; the structural characters
// outside strings are walked one by one to follow the nesting depth. Reads up to 63 bytes past n (the
// mapping's padding).
size_t element_end(const char* d, size_t n, size_t i) {
  int depth = 0;
  bool in_string = false, escape_next = false;  // carried from one block to the next
  for (; i < n; i += 64) {
    BlockMasks m = block_masks(d + i);
    const uint64_t valid = n - i >= 64 ? ~uint64_t(0) : (uint64_t(1) << (n - i)) - 1;
    // backslashes are rare: each one not itself escaped escapes the next byte
    uint64_t escaped = 0, bs = m.backslash & valid;
    if (escape_next) {
      escaped = 1;
      bs &= ~uint64_t(1);
    }
    escape_next = false;
    while (bs) {
      const int k = __builtin_ctzll(bs);
      bs &= bs - 1;
      if (k == 63) {
        escape_next = true;
      } else {
        escaped |= uint64_t(1) << (k + 1);
        bs &= ~(uint64_t(1) << (k + 1));
      }
    }
    const uint64_t quotes = m.quote & ~escaped & valid;
    const uint64_t inside = prefix_xor(quotes) ^ (in_string ? ~uint64_t(0) : 0);
    in_string = (inside >> 63) & 1;
    uint64_t structural = (m.open | m.close | m.comma) & ~inside & valid;
    while (structural) {
      const int k = __builtin_ctzll(structural);
      structural &= structural - 1;
      const uint64_t bit = uint64_t(1) << k;
      if (m.open & bit) {
        ++depth;
      } else if (m.close & bit) {
        if (depth == 0) return i + k;  // the list's own ']'
        --depth;
      } else if (depth == 0) {
        return i + k;  // a ',' between elements
      }
    }
    if (in_string && !escape_next && i + 64 < n) {
      // inside a (long: base64, a long answer) string: memchr to its next quote, and go on from the run of
      // backslashes before that quote (which decides whether it is escaped)
      const void* q = std::memchr(d + i + 64, '"', n - i - 64);
      if (!q) return n;
      size_t j = static_cast<const char*>(q) - d;
      while (j > i + 64 && d[j - 1] == '\\') --j;
      i = j - 64;  // the loop's step lands on j
    }
  }
  return n;
}

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

std::string describe_change(const FileStamp& was, const FileStamp& now) {
  if (was.size != now.size)
    return "size " + std::to_string(was.size) + " -> " + std::to_string(now.size) + " bytes";
  return "modification time changed";
}

}  // namespace

DataFormat data_format_of(const std::string& path) {
  const std::string ext = ".jsonl";
  return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0
             ? DataFormat::kJsonLines
             : DataFormat::kJsonList;
}

// ---- the scan

// Two passes over the mapped file: the samples' byte ranges (sequential: where one ends decides where the
// next begins), then every sample validated and measured, on several threads (each sample on its own).
class DatasetIndex::Scanner {
 public:
  Scanner(const MappedFile& file, Columns& out) : file_(file), d_(file.data()), n_(file.size()), out_(out) {}

  // Pass 1. A problem with the file's structure (truncated, text after the list) is kept, not thrown, until
  // the samples before it are checked: an invalid sample earlier in the file is the error reported first.
  void find_list_samples() {
    size_t i = skip_ws(bom());
    if (i == n_ || d_[i] != '[')
      return structure_problem(i, std::string("the data file must be a JSON array of samples (LLaVA's list format)") +
                                      (i < n_ && d_[i] == '{' ? "; a file of one JSON object per line must be named .jsonl" : ""));
    ++i;
    while (true) {
      i = skip_ws(i);
      if (i == n_) return structure_problem(i, "unexpected end of file inside the array");
      if (d_[i] == ']' && out_.begin.empty()) {
        ++i;
        break;
      }
      const size_t begin = i;
      i = element_end(d_, n_, i);
      if (i >= n_) return structure_problem(begin, "unexpected end of file inside sample " + std::to_string(out_.begin.size()));
      size_t end = i;
      while (end > begin && is_ws(d_[end - 1])) --end;
      if (!add_range(begin, end)) return;
      if (d_[i++] == ']') break;
    }
    i = skip_ws(i);
    if (i != n_) structure_problem(i, "unexpected text after the closing ']'");
  }

  // JSON Lines: one sample per line; blank lines are skipped (a JSON string cannot hold a raw newline).
  void find_line_samples() {
    for (size_t start = bom(); start < n_;) {
      const void* nl = std::memchr(d_ + start, '\n', n_ - start);
      const size_t line_end = nl ? static_cast<const char*>(nl) - d_ : n_;
      size_t begin = start, end = line_end;
      while (begin < end && is_ws(d_[begin])) ++begin;
      while (end > begin && is_ws(d_[end - 1])) --end;
      if (begin < end && !add_range(begin, end)) return;
      start = line_end + 1;
    }
  }

  // Pass 2: ids, image counts and modality lengths, the file cut into `threads` parts of about equal bytes.
  void read_samples(unsigned threads) {
    file_.release(0, n_);
    const size_t n = out_.begin.size();
    threads = static_cast<unsigned>(std::max<size_t>(1, std::min<size_t>(threads, n / 1024 + 1)));
    out_.modality.resize(n);
    out_.images.resize(n);
    std::vector<Part> parts(threads);
    const uint64_t total = n == 0 ? 0 : out_.begin.back() + out_.length.back();
    for (unsigned t = 0; t < threads; ++t) {
      auto cut = [&](unsigned k) {
        return k == threads ? n
                            : static_cast<size_t>(std::lower_bound(out_.begin.begin(), out_.begin.end(), total / threads * k) -
                                                  out_.begin.begin());
      };
      parts[t].lo = cut(t);
      parts[t].hi = cut(t + 1);
    }
    std::vector<std::thread> workers;
    for (unsigned t = 1; t < threads; ++t) workers.emplace_back([this, &parts, t] { read_part(parts[t]); });
    read_part(parts[0]);
    for (auto& w : workers) w.join();
    for (const Part& p : parts) {
      if (p.error) std::rethrow_exception(p.error);
      if (p.bad != std::string::npos)
        fail(out_.begin[p.bad] + p.invalid.offset, "sample " + std::to_string(p.bad) + ": " + p.invalid.reason);
    }
    if (structure_.failed) fail(structure_.at, structure_.why);
    size_t pool = 0;
    for (const Part& p : parts) pool += p.id_pool.size();
    out_.id_pool.reserve(pool);
    out_.id_end.reserve(n);
    for (const Part& p : parts) {
      for (uint32_t len : p.id_lengths) out_.id_end.push_back(out_.id_end.empty() ? len : out_.id_end.back() + len);
      out_.id_pool += p.id_pool;
    }
  }

  void finish() {
    const FileStamp now = file_.current_stamp();
    if (now != file_.stamp())
      throw Error(file_.path() + ": the file changed while it was being indexed (" + describe_change(file_.stamp(), now) +
                  "); run again once it is complete");
  }

 private:
  struct Part {  // one thread's samples [lo, hi) and what it found
    size_t lo = 0, hi = 0, bad = std::string::npos;
    sample_json::Invalid invalid;
    std::string id_pool;
    std::vector<uint32_t> id_lengths;
    std::exception_ptr error;
  };

  void read_part(Part& p) {
    try {
      constexpr size_t kReleaseEvery = 8 << 20;  // hand back what is read: the file does not stay resident
      size_t released = p.lo < p.hi ? out_.begin[p.lo] : 0;
      p.id_lengths.reserve(p.hi - p.lo);
      for (size_t k = p.lo; k < p.hi; ++k) {
        const size_t begin = out_.begin[k];
        sample_json::Stats stats;
        if (!sample_json::index_stats(d_ + begin, out_.length[k], n_ + MappedFile::kPadding - begin, stats, p.invalid)) {
          p.bad = k;
          return;
        }
        out_.modality[k] = stats.modality_length;
        out_.images[k] = stats.image_count;
        p.id_pool += stats.id;
        p.id_lengths.push_back(static_cast<uint32_t>(stats.id.size()));
        if (begin - released > kReleaseEvery) {
          file_.release(released, begin);
          released = begin;
        }
      }
      if (p.lo < p.hi) file_.release(released, out_.begin[p.hi - 1] + out_.length[p.hi - 1]);
    } catch (...) {
      p.error = std::current_exception();
    }
  }

  // Bytes of a UTF-8 byte order mark at the start (some editors write one; json.load refuses it, nlohmann skips it).
  size_t bom() const { return n_ >= 3 && std::memcmp(d_, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0; }

  size_t skip_ws(size_t i) const {
    while (i < n_ && is_ws(d_[i])) ++i;
    return i;
  }

  [[noreturn]] void fail(size_t at, const std::string& why) const {
    throw Error(file_.path() + ": invalid JSON at " + line_column(std::string_view(d_, n_), at) + ": " + why);
  }

  void structure_problem(size_t at, const std::string& why) { structure_ = {true, at, why}; }

  bool add_range(size_t begin, size_t end) {
    const size_t k = out_.begin.size();
    if (end - begin > UINT32_MAX) {
      structure_problem(begin, "sample " + std::to_string(k) + " is larger than 4 GiB");
      return false;
    }
    out_.begin.push_back(begin);
    out_.length.push_back(static_cast<uint32_t>(end - begin));
    if (k + 1 == 1024) {  // sized for the whole file from the first samples: no doubling (two copies at once)
      const double scale = 1.05 * static_cast<double>(n_) / static_cast<double>(std::max<size_t>(end, 1));
      const auto samples = static_cast<size_t>(scale * static_cast<double>(k + 1)) + 16;
      out_.begin.reserve(samples);
      out_.length.reserve(samples);
    }
    constexpr size_t kReleaseEvery = 8 << 20;
    if (begin - released_ > kReleaseEvery) {
      file_.release(released_, begin);
      released_ = begin;
    }
    return true;
  }

  struct Problem {
    bool failed = false;
    size_t at = 0;
    std::string why;
  };

  const MappedFile& file_;
  const char* d_;
  size_t n_, released_ = 0;
  Columns& out_;
  Problem structure_;
};

DatasetIndex DatasetIndex::scan(const MappedFile& file, DataFormat format) {
  DatasetIndex index;
  index.owned_ = std::make_shared<Columns>();
  file.will_read_sequentially();
  Scanner scanner(file, *index.owned_);
  if (format == DataFormat::kJsonLines) scanner.find_line_samples();
  else scanner.find_list_samples();
  scanner.read_samples(std::min(8u, std::max(1u, std::thread::hardware_concurrency())));
  scanner.finish();
  index.point_at_columns();
  return index;
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
  return index;
}

}  // namespace llava
