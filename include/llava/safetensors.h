#pragma once
// safetensors reader and writer (no torch here; model/weights.h turns views into tensors).
// Format: u64 little-endian header size N, N bytes of JSON {name: {dtype, shape, data_offsets:[b,e]},
// "__metadata__": {str: str}}, then the raw little-endian tensor bytes. Files are memory-mapped (private,
// copy-on-write), so reading a tensor is a pointer into the page cache, not a copy.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace llava {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // "F32", ...
DType parse_dtype(const std::string& name, const std::string& where);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Throws llava::Error naming the file for a missing/truncated file, bad header JSON, unknown dtype,
  // offsets outside the file or inconsistent with dtype x shape. writable: see mutable_data (a writable
  // private mapping counts against the commit limit under strict overcommit, so it is opt-in).
  static std::shared_ptr<SafetensorsFile> open(const std::string& path, bool writable = false);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& at(const std::string& name) const;  // throws naming file and tensor
  const uint8_t* data(const TensorInfo& info) const { return data_ + info.begin; }
  // The same bytes, writable (files opened writable only, else llava::Error): the mapping is private, so
  // writes copy the touched pages (copy-on-write) and never change the file. Valid while this object lives.
  uint8_t* mutable_data(const TensorInfo& info) const;
  // Maps every page of the file now (reading it into the page cache if needed) instead of on first access.
  void prefault() const;
  // Element values converted to float (F32/F16/BF16/F64/ints); for tests and small tensors.
  std::vector<float> to_float(const TensorInfo& info) const;

 private:
  SafetensorsFile() = default;
  std::string path_;
  void* map_ = nullptr;
  bool writable_ = false;
  size_t map_size_ = 0;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> by_name_;
  std::map<std::string, std::string> metadata_;
};

// A checkpoint directory: model.safetensors, or shards listed by model.safetensors.index.json.
class SafetensorsCheckpoint {
 public:
  static bool exists_in(const std::string& dir);
  static SafetensorsCheckpoint open_dir(const std::string& dir);
  static SafetensorsCheckpoint open_file(const std::string& path);
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  std::vector<std::string> names() const;
  const Entry* find(const std::string& name) const;
  const std::vector<std::shared_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry> entries_;
};

// What to write: the bytes are read during the call and not kept.
struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;
  size_t nbytes;
};

// Writes one file atomically (PATH.tmp, fsync, rename). Tensors are stored in name order.
void write_safetensors(const std::string& path, std::vector<TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// Writes model.safetensors, or model-0000i-of-0000n.safetensors shards of at most max_shard_bytes
// each plus model.safetensors.index.json, into dir.
void write_safetensors_sharded(const std::string& dir, std::vector<TensorToWrite> tensors,
                               uint64_t max_shard_bytes);

// float <-> half/bfloat16 bit conversions (round to nearest even), used by to_float and writers.
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);
uint16_t float_to_bf16(float f);

}  // namespace llava
