#pragma once
// Shared helpers for tests: where the fixtures are, and a skip that says why.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include "llava/fs_util.h"

namespace llava::testing {

// ../shared beside the checkout (or $LLAVA_SHARED_DIR). Empty when absent, e.g. in a user's fresh clone.
inline std::string shared_dir() {
  const char* env = std::getenv("LLAVA_SHARED_DIR");
  std::string dir = env && *env ? env : LLAVA_SHARED_DIR;
  return std::filesystem::exists(dir + "/fixtures") ? dir : std::string();
}

inline std::string fixture(const std::string& rel) { return shared_dir() + "/fixtures/" + rel; }

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("llava_test_" + name + "_" + std::to_string(::getpid()));
  llava::remove_tree(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

}  // namespace llava::testing

// Skips the current test, with the reason, when ../shared/fixtures is not there.
#define LLAVA_REQUIRE_FIXTURES()                                                                     \
  do {                                                                                               \
    if (::llava::testing::shared_dir().empty())                                                      \
      GTEST_SKIP() << "../shared/fixtures not found (set LLAVA_SHARED_DIR): fixture comparison skipped"; \
  } while (0)
