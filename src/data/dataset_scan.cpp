#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "llava/dataset_index.h"
#include "llava/error.h"
#include "llava/text_util.h"
#include "sample_json.h"

// DatasetIndex::scan. Where each sample is has to be found in order (a sample ends where the next one
// begins); what each sample is (validated, measured) does not. So the calling thread finds the byte ranges
// and hands them out in chunks to reader threads, and reads chunks itself once the file is cut up.

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

constexpr size_t kChunkSamples = 4096;
constexpr size_t kChunkBytes = 8 << 20;

// Samples found together, and what their reader found.
struct Chunk {
  size_t first = 0;  // index of its first sample in the file
  std::vector<uint64_t> begin;
  std::vector<uint32_t> length;
  std::vector<int32_t> modality, images;
  std::string id_pool;
  std::vector<uint32_t> id_lengths;
  size_t bad = std::string::npos;  // its first invalid sample (index in the chunk)
  sample_json::Invalid invalid;
  std::exception_ptr error;
  uint64_t bytes() const { return begin.empty() ? 0 : begin.back() + length.back() - begin.front(); }
};

// Chunks found and not yet read. The finder waits while `capacity` wait, so that the mapped pages not yet
// read (and handed back) stay bounded whatever the readers' speed.
class ChunkQueue {
 public:
  explicit ChunkQueue(size_t capacity) : capacity_(capacity) {}
  void push(Chunk* c) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return waiting_.size() < capacity_; });
    waiting_.push_back(c);
    cv_.notify_all();
  }
  Chunk* pop() {  // nullptr once closed and empty
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return closed_ || !waiting_.empty(); });
    if (waiting_.empty()) return nullptr;
    Chunk* c = waiting_.front();
    waiting_.pop_front();
    cv_.notify_all();
    return c;
  }
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Chunk*> waiting_;
  size_t capacity_;
  bool closed_ = false;
};

}  // namespace

class DatasetIndex::Scanner {
 public:
  // threads: the finder and the readers. A file of one chunk or less is read by the calling thread alone.
  Scanner(const MappedFile& file, Columns& out, unsigned threads)
      : file_(file),
        d_(file.data()),
        n_(file.size()),
        out_(out),
        readers_(file.size() > kChunkBytes && threads > 1 ? threads - 1 : 0),
        queue_(2 * std::max(1u, readers_)) {}

  void run(DataFormat format) {
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < readers_; ++t) workers.emplace_back([this] { read_chunks(); });
    std::exception_ptr finder_error;
    try {
      if (format == DataFormat::kJsonLines) find_line_samples();
      else find_list_samples();
      hand_out();
    } catch (...) {
      finder_error = std::current_exception();
    }
    queue_.close();
    read_chunks();
    for (auto& w : workers) w.join();
    // The readers hand back their chunks' pages, but the finder ran ahead of them and some of the pages it
    // mapped stay (~5 MiB at 1 GB): all of them go back here.
    file_.release(0, n_);
    if (finder_error) std::rethrow_exception(finder_error);
    merge();
    const FileStamp now = file_.current_stamp();
    if (now != file_.stamp())
      throw Error(file_.path() + ": the file changed while it was being indexed (" + describe_change(file_.stamp(), now) +
                  "); run again once it is complete");
  }

 private:
  // A problem with the file's structure (truncated, text after the list) is kept, not thrown, until the
  // samples before it are read: an invalid sample earlier in the file is the error reported first.
  void find_list_samples() {
    size_t i = skip_ws(bom());
    if (i == n_ || d_[i] != '[')
      return structure_problem(i, std::string("the data file must be a JSON array of samples (LLaVA's list format)") +
                                      (i < n_ && d_[i] == '{' ? "; a file of one JSON object per line must be named .jsonl" : ""));
    ++i;
    while (true) {
      i = skip_ws(i);
      if (i == n_) return structure_problem(i, "unexpected end of file inside the array");
      if (d_[i] == ']' && found_ == 0) {
        ++i;
        break;
      }
      const size_t begin = i;
      i = element_end(d_, n_, i);
      if (i >= n_) return structure_problem(begin, "unexpected end of file inside sample " + std::to_string(found_));
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

  bool add_range(size_t begin, size_t end) {
    if (end - begin > UINT32_MAX) {
      structure_problem(begin, "sample " + std::to_string(found_) + " is larger than 4 GiB");
      return false;
    }
    if (!current_) {
      chunks_.push_back(std::make_unique<Chunk>());
      current_ = chunks_.back().get();
      current_->first = found_;
      current_->begin.reserve(kChunkSamples);
      current_->length.reserve(kChunkSamples);
    }
    current_->begin.push_back(begin);
    current_->length.push_back(static_cast<uint32_t>(end - begin));
    ++found_;
    if (current_->begin.size() == kChunkSamples || current_->bytes() >= kChunkBytes) hand_out();
    return true;
  }

  // To a reader, or (without readers) read right away, so that pages are handed back as the scan goes.
  // The next chunks' bytes are asked for ahead (read-ahead when the file is not in the page cache yet).
  void hand_out() {
    if (current_ && !current_->begin.empty()) {
      const uint64_t end = current_->begin.back() + current_->length.back();
      file_.will_need(end, end + 4 * kChunkBytes);
    }
    if (current_ && readers_ > 0) queue_.push(current_);
    else if (current_) read_chunk(*current_);
    current_ = nullptr;
  }

  void read_chunks() {
    while (Chunk* c = queue_.pop()) read_chunk(*c);
  }

  // Every sample validated and measured; the chunk's pages handed back once read (they stay in the page cache).
  void read_chunk(Chunk& c) {
    try {
      const size_t n = c.begin.size();
      c.modality.resize(n);
      c.images.resize(n);
      c.id_lengths.reserve(n);
      for (size_t k = 0; k < n; ++k) {
        sample_json::Stats stats;
        if (!sample_json::index_stats(d_ + c.begin[k], c.length[k], n_ + MappedFile::kPadding - c.begin[k], stats,
                                      c.invalid)) {
          c.bad = k;
          break;
        }
        c.modality[k] = stats.modality_length;
        c.images[k] = stats.image_count;
        c.id_pool += stats.id;
        c.id_lengths.push_back(static_cast<uint32_t>(stats.id.size()));
      }
    } catch (...) {
      c.error = std::current_exception();
    }
    if (!c.begin.empty()) file_.release(c.begin.front(), c.begin.back() + c.length.back());
  }

  // The first problem in file order is the error; else the chunks become the index's columns (each chunk
  // freed once copied).
  void merge() {
    for (const auto& c : chunks_) {
      if (c->error) std::rethrow_exception(c->error);
      if (c->bad != std::string::npos)
        fail(c->begin[c->bad] + c->invalid.offset, "sample " + std::to_string(c->first + c->bad) + ": " + c->invalid.reason);
    }
    if (structure_.failed) fail(structure_.at, structure_.why);
    size_t pool = 0;
    for (const auto& c : chunks_) pool += c->id_pool.size();
    for (auto* column : {&out_.begin, &out_.id_end}) column->reserve(found_);
    out_.length.reserve(found_);
    out_.modality.reserve(found_);
    out_.images.reserve(found_);
    out_.id_pool.reserve(pool);
    for (auto& c : chunks_) {
      out_.begin.insert(out_.begin.end(), c->begin.begin(), c->begin.end());
      out_.length.insert(out_.length.end(), c->length.begin(), c->length.end());
      out_.modality.insert(out_.modality.end(), c->modality.begin(), c->modality.end());
      out_.images.insert(out_.images.end(), c->images.begin(), c->images.end());
      for (uint32_t len : c->id_lengths) out_.id_end.push_back((out_.id_end.empty() ? 0 : out_.id_end.back()) + len);
      out_.id_pool += c->id_pool;
      c.reset();
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

  struct Problem {
    bool failed = false;
    size_t at = 0;
    std::string why;
  };

  const MappedFile& file_;
  const char* d_;
  size_t n_;
  Columns& out_;
  unsigned readers_;
  ChunkQueue queue_;
  std::vector<std::unique_ptr<Chunk>> chunks_;  // in file order; only the finder appends
  Chunk* current_ = nullptr;                    // being filled by the finder
  size_t found_ = 0;
  Problem structure_;
};

DatasetIndex DatasetIndex::scan(const MappedFile& file, DataFormat format) {
  DatasetIndex index;
  index.owned_ = std::make_shared<Columns>();
  Scanner(file, *index.owned_, std::min(8u, std::max(1u, std::thread::hardware_concurrency()))).run(format);
  index.point_at_columns();
  return index;
}

}  // namespace llava
