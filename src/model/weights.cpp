#include "model/weights.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "llava/error.h"
#include "model/config_json.h"

namespace llava {
namespace fs = std::filesystem;

torch::Dtype torch_dtype_of(DType d) {
  switch (d) {
    case DType::F64: return torch::kDouble;
    case DType::F32: return torch::kFloat;
    case DType::F16: return torch::kHalf;
    case DType::BF16: return torch::kBFloat16;
    case DType::I64: return torch::kLong;
    case DType::I32: return torch::kInt;
    case DType::I16: return torch::kShort;
    case DType::I8: return torch::kChar;
    case DType::U8: return torch::kByte;
    case DType::BOOL: return torch::kBool;
  }
  return torch::kFloat;
}

DType safetensors_dtype_of(torch::Dtype d, const std::string& where) {
  switch (d) {
    case torch::kDouble: return DType::F64;
    case torch::kFloat: return DType::F32;
    case torch::kHalf: return DType::F16;
    case torch::kBFloat16: return DType::BF16;
    case torch::kLong: return DType::I64;
    case torch::kInt: return DType::I32;
    case torch::kShort: return DType::I16;
    case torch::kChar: return DType::I8;
    case torch::kByte: return DType::U8;
    case torch::kBool: return DType::BOOL;
    default: throw Error(where + ": dtype " + std::string(c10::toString(d)) + " cannot be stored in safetensors");
  }
}

std::string hf_dtype_name(torch::Dtype d) {
  switch (d) {
    case torch::kFloat: return "float32";
    case torch::kBFloat16: return "bfloat16";
    case torch::kHalf: return "float16";
    case torch::kDouble: return "float64";
    default: return "float32";
  }
}

// ---------------------------------------------------------------- files

bool WeightFiles::exist_in(const std::string& dir) {
  for (const char* f : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json"})
    if (fs::exists(fs::path(dir) / f)) return true;
  return false;
}

static std::vector<std::string> shards_from_index(const std::string& dir, const std::string& index_path) {
  auto j = read_json_file(index_path);
  if (!j.contains("weight_map") || !j["weight_map"].is_object()) throw Error(index_path + ": no weight_map object");
  std::set<std::string> shards;
  for (auto& [name, shard] : j["weight_map"].items()) {
    if (!shard.is_string()) throw Error(index_path + ": weight_map entry '" + name + "' is not a file name");
    shards.insert(shard.get<std::string>());
  }
  std::vector<std::string> out;
  for (const auto& s : shards) {
    fs::path p = fs::path(dir) / s;
    if (!fs::exists(p)) throw Error(index_path + ": shard '" + s + "' does not exist");
    out.push_back(p.string());
  }
  return out;
}

WeightFiles WeightFiles::in_dir(const std::string& dir) {
  WeightFiles w;
  w.where = dir;
  fs::path d(dir);
  if (fs::exists(d / "model.safetensors.index.json")) {
    w.paths = shards_from_index(dir, (d / "model.safetensors.index.json").string());
  } else if (fs::exists(d / "model.safetensors")) {
    w.paths = {(d / "model.safetensors").string()};
  } else if (fs::exists(d / "pytorch_model.bin.index.json")) {
    w.paths = shards_from_index(dir, (d / "pytorch_model.bin.index.json").string());
  } else if (fs::exists(d / "pytorch_model.bin")) {
    w.paths = {(d / "pytorch_model.bin").string()};
  } else {
    throw Error(dir + ": no weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json])");
  }
  return w;
}

WeightFiles WeightFiles::single(const std::string& path) {
  if (!fs::exists(path)) throw Error(path + ": weights file does not exist");
  return WeightFiles{{path}, path};
}

// ---------------------------------------------------------------- loading

namespace {

bool is_safetensors(const std::string& path) {
  const std::string ext = ".safetensors";
  return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
}

std::string shape_str(c10::IntArrayRef s) { return c10::str(s); }

// Throws unless a checkpoint tensor of `sizes` / `dtype` can be loaded into dst; `where` = "FILE: tensor 'NAME'".
void check_loadable(c10::IntArrayRef sizes, torch::Dtype dtype, const torch::Tensor& dst, const std::string& where) {
  if (sizes != dst.sizes())
    throw Error(where + ": shape " + shape_str(sizes) + " in the checkpoint, the model expects " +
                shape_str(dst.sizes()));
  if (dst.is_floating_point() && !c10::isFloatingType(dtype))
    throw Error(where + ": dtype " + std::string(c10::toString(dtype)) +
                " cannot be loaded into a floating-point parameter");
}

void copy_checked(const torch::Tensor& src, torch::Tensor& dst, const std::string& where) {
  check_loadable(src.sizes(), src.scalar_type(), dst, where);
  torch::NoGradGuard no_grad;
  dst.copy_(src);
}

struct CopyJob {
  torch::Tensor src, dst;
};

// Runs the copies (with dtype conversion) on the intra-op threads, in slices of a few MiB so that one large
// tensor is spread over the threads too.
void run_copies(const std::vector<CopyJob>& jobs) {
  struct Slice {
    size_t job;
    int64_t begin, end;  // elements of the flattened tensor; whole tensor when dst is not contiguous
  };
  std::vector<Slice> slices;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const torch::Tensor& d = jobs[j].dst;
    const int64_t n = d.numel();
    const int64_t step = d.is_contiguous() ? std::max<int64_t>(1, (8 << 20) / d.element_size()) : n;
    for (int64_t b = 0; b < n; b += step) slices.push_back({j, b, std::min(n, b + step)});
  }
  at::parallel_for(0, static_cast<int64_t>(slices.size()), 1, [&](int64_t b, int64_t e) {
    torch::NoGradGuard no_grad;  // per thread: grad mode is thread-local
    for (int64_t i = b; i < e; ++i) {
      const Slice& s = slices[i];
      const CopyJob& job = jobs[s.job];
      if (!job.dst.is_contiguous()) {
        torch::Tensor d = job.dst;
        d.copy_(job.src);
        continue;
      }
      job.dst.view({-1}).narrow(0, s.begin, s.end - s.begin).copy_(
          job.src.reshape({-1}).narrow(0, s.begin, s.end - s.begin));
    }
  });
}

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open");
  std::streamsize size = in.tellg();
  in.seekg(0);
  std::vector<char> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(bytes.data(), size)) throw Error(path + ": read failed");
  return bytes;
}

// torch.save'd dict of tensors -> (name, tensor) pairs.
std::vector<std::pair<std::string, torch::Tensor>> read_torch_bin(const std::string& path) {
  torch::IValue v;
  {
    std::vector<char> bytes = read_bytes(path);
    try {
      v = torch::pickle_load(bytes);
    } catch (const std::exception& e) {
      std::string msg = e.what();
      msg = msg.substr(0, msg.find('\n'));
      throw Error(path + ": cannot read PyTorch weights (a torch.save zip archive of a dict of tensors is expected): " +
                  msg);
    }
  }  // the file bytes are released here; the tensors own their storage
  if (!v.isGenericDict()) throw Error(path + ": PyTorch weights file does not hold a dict of tensors");
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : v.toGenericDict()) {
    if (!item.key().isString()) throw Error(path + ": PyTorch weights dict has a non-string key");
    const std::string name = item.key().toStringRef();
    if (!item.value().isTensor()) throw Error(path + ": entry '" + name + "' is not a tensor");
    out.emplace_back(name, item.value().toTensor());
  }
  return out;
}

}  // namespace

LoadReport load_weights(const WeightFiles& files, const NameScheme& scheme,
                        const std::map<std::string, torch::Tensor>& targets, bool adopt_file_memory) {
  LoadReport report;
  auto target_of = [&](const std::string& ckpt_name, const std::string& file) -> torch::Tensor* {
    std::optional<std::string> m = scheme.to_model(ckpt_name);
    if (m && m->empty()) return nullptr;  // known, ignored
    auto it = m ? targets.find(*m) : targets.end();
    if (it == targets.end()) {
      report.unexpected.push_back(file + ": " + ckpt_name);
      return nullptr;
    }
    if (report.loaded.count(*m))
      throw Error(file + ": tensor '" + ckpt_name + "' provides '" + *m + "', already loaded from " +
                  report.file_of[*m]);
    report.loaded.insert(*m);
    report.file_of[*m] = file;
    return const_cast<torch::Tensor*>(&it->second);
  };

  for (const auto& path : files.paths) {
    if (is_safetensors(path)) {
      auto f = SafetensorsFile::open(path, adopt_file_memory);
      if (adopt_file_memory) f->prefault();
      std::vector<CopyJob> jobs;
      for (const auto& info : f->tensors()) {
        torch::Tensor* dst = target_of(info.name, path);
        if (!dst) continue;
        const torch::Dtype st = torch_dtype_of(info.dtype);
        check_loadable(info.shape, st, *dst, path + ": tensor '" + info.name + "'");
        const uint8_t* p = f->data(info);
        const bool aligned = reinterpret_cast<uintptr_t>(p) % dtype_size(info.dtype) == 0;
        const auto opts = torch::TensorOptions().dtype(st);
        if (adopt_file_memory && aligned && st == dst->scalar_type() && dst->device().is_cpu()) {
          // The parameter becomes the mapped bytes themselves; the deleter keeps the mapping alive.
          dst->set_data(torch::from_blob(f->mutable_data(info), info.shape, [f](void*) {}, opts));
        } else if (aligned) {
          // a view of the page cache, read once by the copy
          jobs.push_back({torch::from_blob(const_cast<uint8_t*>(p), info.shape, opts), *dst});
        } else {
          torch::Tensor src = torch::empty(info.shape, opts);
          std::memcpy(src.data_ptr(), p, info.end - info.begin);
          jobs.push_back({src, *dst});
        }
      }
      run_copies(jobs);  // before f (the mapping the sources view) can go
    } else {
      for (auto& [name, tensor] : read_torch_bin(path)) {
        torch::Tensor* dst = target_of(name, path);
        if (dst) copy_checked(tensor, *dst, path + ": tensor '" + name + "'");
      }
    }
  }
  return report;
}

static std::string list_names(const std::vector<std::string>& names) {
  std::string s;
  const size_t shown = std::min<size_t>(names.size(), 12);
  for (size_t i = 0; i < shown; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > shown) s += ", ... (" + std::to_string(names.size() - shown) + " more)";
  return s;
}

void check_complete(const std::map<std::string, torch::Tensor>& targets, const LoadReport& report,
                    const NameScheme& scheme, const std::string& where) {
  std::vector<std::string> missing;
  for (const auto& [name, t] : targets)
    if (!report.loaded.count(name)) {
      std::string c = scheme.to_checkpoint(name);
      missing.push_back(c.empty() ? name : c);
    }
  std::string msg;
  if (!missing.empty())
    msg += where + ": missing " + std::to_string(missing.size()) + " tensor(s): " + list_names(missing);
  if (!report.unexpected.empty())
    msg += std::string(msg.empty() ? "" : "; ") + where + ": " + std::to_string(report.unexpected.size()) +
           " unexpected tensor(s): " + list_names(report.unexpected);
  if (!msg.empty()) throw Error(msg);
}

// ---------------------------------------------------------------- saving

std::vector<TensorToWrite> TensorsToSave::views() const {
  std::vector<TensorToWrite> out;
  for (size_t i = 0; i < names.size(); ++i) {
    const torch::Tensor& t = tensors[i];
    out.push_back(TensorToWrite{names[i], safetensors_dtype_of(t.scalar_type(), names[i]),
                                std::vector<int64_t>(t.sizes().begin(), t.sizes().end()), t.data_ptr(),
                                static_cast<size_t>(t.numel()) * t.element_size()});
  }
  return out;
}

TensorsToSave collect_for_save(const std::map<std::string, torch::Tensor>& params, const NameScheme& scheme,
                               std::optional<torch::Dtype> dtype) {
  TensorsToSave out;
  for (const auto& [name, p] : params) {
    std::string c = scheme.to_checkpoint(name);
    if (c.empty()) continue;
    torch::Tensor t = p.detach();
    if (dtype && t.is_floating_point()) t = t.to(*dtype);
    t = t.to(torch::kCPU).contiguous();
    out.names.push_back(c);
    out.tensors.push_back(t);
  }
  return out;
}

}  // namespace llava
