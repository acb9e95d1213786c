// remove_tree: a depth-first walk with nftw(3) and remove(3) -- no std::filesystem (see fs_util.h for why).
#include "llava/fs_util.h"

#include <ftw.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <string>

namespace llava {
namespace {

// nftw gives its callback no user pointer; a thread-local carries the walk's state.
struct Walk {
  std::uintmax_t removed = 0;
  int error = 0;
  std::string failed_path;
};
thread_local Walk* current_walk = nullptr;

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
  if (std::remove(path) != 0) {
    current_walk->error = errno;
    current_walk->failed_path = path;
    return 1;  // stop the walk
  }
  ++current_walk->removed;
  return 0;
}

std::uintmax_t remove_tree_walk(const std::filesystem::path& path, std::error_code& ec, std::string* failed) noexcept {
  ec.clear();
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return 0;
    ec.assign(errno, std::generic_category());
    return static_cast<std::uintmax_t>(-1);
  }
  Walk walk;
  Walk* outer = current_walk;
  current_walk = &walk;
  // FTW_DEPTH: children before their folder; FTW_PHYS: do not follow symbolic links.
  int rc = ::nftw(path.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS);
  current_walk = outer;
  if (rc != 0) {
    ec.assign(walk.error ? walk.error : errno, std::generic_category());
    if (failed) *failed = walk.failed_path.empty() ? path.string() : walk.failed_path;
    return static_cast<std::uintmax_t>(-1);
  }
  return walk.removed;
}

}  // namespace

std::uintmax_t remove_tree(const std::filesystem::path& path, std::error_code& ec) noexcept {
  return remove_tree_walk(path, ec, nullptr);
}

std::uintmax_t remove_tree(const std::filesystem::path& path) {
  std::error_code ec;
  std::string failed;
  std::uintmax_t n = remove_tree_walk(path, ec, &failed);
  if (ec) throw std::filesystem::filesystem_error("llava::remove_tree: cannot remove " + failed, path, ec);
  return n;
}

}  // namespace llava
