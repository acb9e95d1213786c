// Finds and dlopens libllava_sentencepiece.so (see spm_module.h for why it is a separate module).
#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <mutex>

#include "llava/error.h"
#include "spm_module.h"

namespace llava::spm {
namespace {

constexpr const char* kModuleName = "libllava_sentencepiece.so";

std::vector<std::string> candidate_paths() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("LLAVA_SPM_MODULE"); env && *env) paths.push_back(env);
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    paths.push_back((exe.parent_path() / kModuleName).string());                 // beside llava-train
    paths.push_back((exe.parent_path() / "../lib" / kModuleName).string());      // installed layout
  }
#ifdef LLAVA_SPM_MODULE_BUILD_PATH
  paths.push_back(LLAVA_SPM_MODULE_BUILD_PATH);  // tests run from build/tests
#endif
  return paths;
}

const ModuleApi* load_module() {
  std::string tried;
  for (const auto& path : candidate_paths()) {
    if (!std::filesystem::exists(path)) {
      tried += "\n  " + path + " (absent)";
      continue;
    }
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      tried += "\n  " + path + ": " + dlerror();
      continue;
    }
    auto entry = reinterpret_cast<const ModuleApi* (*)()>(dlsym(handle, "llava_spm_module_api"));
    if (!entry) throw Error(path + ": not a llava sentencepiece module (no llava_spm_module_api)");
    const ModuleApi* api = entry();
    if (api->abi_version != kAbiVersion) throw Error(path + ": sentencepiece module of another llava-train build");
    return api;  // the handle stays open for the life of the process
  }
  throw Error(std::string("cannot load the SentencePiece module ") + kModuleName + " (set LLAVA_SPM_MODULE); tried:" + tried);
}

}  // namespace

const ModuleApi& module() {
  static const ModuleApi* api = load_module();
  return *api;
}

}  // namespace llava::spm
