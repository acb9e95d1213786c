#include "llava/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "llava/error.h"

namespace llava {
namespace fs = std::filesystem;
using nlohmann::json;

size_t dtype_size(DType d) {
  switch (d) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: case DType::I16: return 2;
    case DType::I8: case DType::U8: case DType::BOOL: return 1;
  }
  return 0;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F64: return "F64";
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::I64: return "I64";
    case DType::I32: return "I32";
    case DType::I16: return "I16";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::BOOL: return "BOOL";
  }
  return "?";
}

DType parse_dtype(const std::string& name, const std::string& where) {
  static const std::map<std::string, DType> kNames = {
      {"F64", DType::F64}, {"F32", DType::F32}, {"F16", DType::F16}, {"BF16", DType::BF16},
      {"I64", DType::I64}, {"I32", DType::I32}, {"I16", DType::I16}, {"I8", DType::I8},
      {"U8", DType::U8},   {"BOOL", DType::BOOL}};
  auto it = kNames.find(name);
  if (it == kNames.end()) throw Error(where + ": unsupported dtype '" + name + "'");
  return it->second;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

float half_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(mant & 0x400u)) { mant <<= 1; --exp; }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);  // NaN stays NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path, bool writable) {
  std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->writable_ = writable;
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open safetensors file: " + std::strerror(errno));
  struct stat st{};
  ::fstat(fd, &st);
  size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    throw Error(path + ": truncated safetensors file (" + std::to_string(size) + " bytes, no header)");
  }
  // Private: with PROT_WRITE a write copies the touched page for this process and never reaches the file.
  void* m = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED) throw Error(path + ": mmap failed: " + std::strerror(errno));
  f->map_ = m;
  f->map_size_ = size;
  auto* bytes = static_cast<const uint8_t*>(m);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | bytes[i];
  if (header_len > size - 8 || header_len > (100ull << 20))
    throw Error(path + ": bad safetensors header length " + std::to_string(header_len) + " (file has " +
                std::to_string(size) + " bytes; truncated or not a safetensors file)");
  json header;
  try {
    header = json::parse(reinterpret_cast<const char*>(bytes + 8), reinterpret_cast<const char*>(bytes + 8 + header_len));
  } catch (const json::exception& e) {
    throw Error(path + ": bad safetensors header JSON: " + e.what());
  }
  if (!header.is_object()) throw Error(path + ": bad safetensors header: not a JSON object");
  f->data_ = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  for (auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (v.is_object())
        for (auto& [k, mv] : v.items()) f->metadata_[k] = mv.is_string() ? mv.get<std::string>() : mv.dump();
      continue;
    }
    std::string where = path + ": tensor '" + name + "'";
    try {
      TensorInfo info;
      info.name = name;
      info.dtype = parse_dtype(v.at("dtype").get<std::string>(), where);
      info.shape = v.at("shape").get<std::vector<int64_t>>();
      auto offs = v.at("data_offsets").get<std::vector<uint64_t>>();
      if (offs.size() != 2) throw Error(where + ": data_offsets must have 2 entries");
      info.begin = offs[0];
      info.end = offs[1];
      for (int64_t d : info.shape)
        if (d < 0) throw Error(where + ": negative dimension");
      if (info.end < info.begin || info.end > data_size)
        throw Error(where + ": data_offsets [" + std::to_string(info.begin) + ", " + std::to_string(info.end) +
                    "] outside the data section of " + std::to_string(data_size) + " bytes (truncated file?)");
      if (static_cast<uint64_t>(info.numel()) * dtype_size(info.dtype) != info.end - info.begin)
        throw Error(where + ": " + std::to_string(info.end - info.begin) + " bytes do not match dtype " +
                    dtype_name(info.dtype) + " x shape");
      f->by_name_[name] = f->tensors_.size();
      f->tensors_.push_back(std::move(info));
    } catch (const json::exception& e) {
      throw Error(where + ": bad header entry: " + e.what());
    }
  }
  return f;
}

uint8_t* SafetensorsFile::mutable_data(const TensorInfo& info) const {
  if (!writable_) throw Error(path_ + ": mutable_data needs a file opened writable");
  return const_cast<uint8_t*>(data_) + info.begin;
}

void SafetensorsFile::prefault() const {
  if (!map_) return;
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif
  // Maps the (read from disk if needed) page-cache pages without copying them; older kernels only get the
  // read-ahead hint and fault the pages in on first access.
  if (::madvise(map_, map_size_, MADV_POPULATE_READ) != 0) ::madvise(map_, map_size_, MADV_WILLNEED);
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(map_, map_size_);
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::at(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) throw Error(path_ + ": missing tensor '" + name + "'");
  return *t;
}

std::vector<float> SafetensorsFile::to_float(const TensorInfo& info) const {
  const uint8_t* p = data(info);
  const int64_t n = info.numel();
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (info.dtype) {
      case DType::F32: { float v; std::memcpy(&v, p + 4 * i, 4); out[i] = v; break; }
      case DType::F64: { double v; std::memcpy(&v, p + 8 * i, 8); out[i] = static_cast<float>(v); break; }
      case DType::F16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = half_to_float(v); break; }
      case DType::BF16: { uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = bf16_to_float(v); break; }
      case DType::I64: { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = static_cast<float>(v); break; }
      case DType::I32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = static_cast<float>(v); break; }
      case DType::I16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
      case DType::I8: out[i] = static_cast<int8_t>(p[i]); break;
      case DType::U8: case DType::BOOL: out[i] = p[i]; break;
    }
  }
  return out;
}

// ---- checkpoint directories ----

bool SafetensorsCheckpoint::exists_in(const std::string& dir) {
  return fs::exists(fs::path(dir) / "model.safetensors") || fs::exists(fs::path(dir) / "model.safetensors.index.json");
}

SafetensorsCheckpoint SafetensorsCheckpoint::open_file(const std::string& path) {
  SafetensorsCheckpoint c;
  c.files_.push_back(SafetensorsFile::open(path));
  for (const auto& t : c.files_[0]->tensors()) c.entries_[t.name] = Entry{c.files_[0].get(), &t};
  return c;
}

SafetensorsCheckpoint SafetensorsCheckpoint::open_dir(const std::string& dir) {
  fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (!fs::exists(index)) {
    fs::path single = fs::path(dir) / "model.safetensors";
    if (!fs::exists(single)) throw Error(dir + ": no model.safetensors or model.safetensors.index.json");
    return open_file(single.string());
  }
  json j;
  try {
    std::ifstream in(index);
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(index.string() + ": bad JSON: " + e.what());
  }
  if (!j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(index.string() + ": no weight_map object");
  SafetensorsCheckpoint c;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> by_shard;
  for (auto& [name, shard_v] : j["weight_map"].items()) {
    std::string shard = shard_v.get<std::string>();
    auto& f = by_shard[shard];
    if (!f) {
      f = SafetensorsFile::open((fs::path(dir) / shard).string());
      c.files_.push_back(f);
    }
    const TensorInfo* t = f->find(name);
    if (!t) throw Error(f->path() + ": tensor '" + name + "' listed in " + index.string() + " is missing");
    c.entries_[name] = Entry{f.get(), t};
  }
  return c;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> n;
  for (const auto& [k, v] : entries_) n.push_back(k);
  return n;
}

const SafetensorsCheckpoint::Entry* SafetensorsCheckpoint::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

// ---- writing ----

void write_safetensors(const std::string& path, std::vector<TensorToWrite> tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    if (static_cast<size_t>(numel) * dtype_size(t.dtype) != t.nbytes)
      throw Error(path + ": tensor '" + t.name + "': byte size does not match dtype x shape");
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h += ' ';  // keep the data section 8-byte aligned, as the reference writer does
  std::string tmp = path + ".tmp";
  FILE* out = std::fopen(tmp.c_str(), "wb");
  if (!out) throw Error(tmp + ": cannot write: " + std::strerror(errno));
  uint8_t len[8];
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, out) == 8 && std::fwrite(h.data(), 1, h.size(), out) == h.size();
  for (const auto& t : tensors)
    if (ok && t.nbytes) ok = std::fwrite(t.data, 1, t.nbytes, out) == t.nbytes;
  ok = ok && std::fflush(out) == 0 && ::fsync(fileno(out)) == 0;
  ok = (std::fclose(out) == 0) && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(tmp + ": write failed (disk full?)");
  }
  fs::rename(tmp, path);
}

void write_safetensors_sharded(const std::string& dir, std::vector<TensorToWrite> tensors, uint64_t max_shard_bytes) {
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<std::vector<TensorToWrite>> shards(1);
  uint64_t current = 0, total = 0;
  for (auto& t : tensors) {
    if (current > 0 && current + t.nbytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    current += t.nbytes;
    total += t.nbytes;
    shards.back().push_back(t);
  }
  fs::create_directories(dir);
  if (shards.size() == 1) {
    write_safetensors((fs::path(dir) / "model.safetensors").string(), shards[0]);
    return;
  }
  json weight_map = json::object();
  char name[64];
  for (size_t i = 0; i < shards.size(); ++i) {
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
    for (const auto& t : shards[i]) weight_map[t.name] = name;
    write_safetensors((fs::path(dir) / name).string(), shards[i]);
  }
  json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  std::string path = (fs::path(dir) / "model.safetensors.index.json").string();
  {
    std::ofstream out(path + ".tmp");
    out << index.dump(2) << "\n";
    if (!out) throw Error(path + ": write failed");
  }
  fs::rename(path + ".tmp", path);
}

}  // namespace llava
