#pragma once
// A file's bytes mapped read-only (or, for tests and the demo, held in memory), with zeroed padding after
// the end so that SIMD parsers (simdjson reads up to 64 bytes past a document) never read outside the
// mapping. Pages are only read when touched; release() hands pages back so that walking a file larger
// than memory does not grow the resident set.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace llava {

// What identifies a version of a file: an index built from it is valid while both are unchanged.
struct FileStamp {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp& o) const { return size == o.size && mtime_ns == o.mtime_ns; }
  bool operator!=(const FileStamp& o) const { return !(*this == o); }
};

// stat(2) of a path. Throws llava::Error naming the path when it cannot be read.
FileStamp file_stamp(const std::string& path);
// What differs, for messages: "size 10 -> 12 bytes" or "modification time changed".
std::string describe_change(const FileStamp& was, const FileStamp& now);

class MappedFile {
 public:
  static constexpr size_t kPadding = 64;  // readable zero bytes after size() (simdjson's SIMDJSON_PADDING)

  // Maps the whole file. Throws llava::Error naming the path (missing, not a regular file, mmap failure).
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  // Holds `bytes` (with padding) under `name`, for data sets given as text.
  static std::shared_ptr<const MappedFile> from_memory(std::string bytes, const std::string& name);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }     // as given (for messages)
  const std::string& real_path() const { return real_path_; }  // absolute, links resolved (the file's identity)
  bool in_memory() const { return fd_ < 0; }
  // Size and modification time when mapped.
  const FileStamp& stamp() const { return stamp_; }
  // The file's size and modification time now (fstat of the mapped file; stamp() for memory).
  FileStamp current_stamp() const;

  // Drops the mapped pages that lie in [begin, end) from this process (they stay in the page cache and
  // are read again on the next touch). No-op for memory.
  void release(size_t begin, size_t end) const;
  // Asks the kernel to read [begin, end) into the page cache ahead of use (read-ahead for a file not yet
  // cached; a no-op for one that is). Not MADV_SEQUENTIAL: that would let the kernel drop the file's pages
  // from the page cache right after the scan, and training reads them again.
  void will_need(size_t begin, size_t end) const;

 private:
  MappedFile() = default;
  const char* data_ = nullptr;
  size_t size_ = 0, mapped_ = 0;  // mapped_: bytes of the reservation (file + padding), 0 when in memory
  int fd_ = -1;
  std::string path_, real_path_, memory_;
  FileStamp stamp_;
};

}  // namespace llava
