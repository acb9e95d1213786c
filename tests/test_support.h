#pragma once
// Shared helpers for tests: where the fixtures are, and a skip that says why.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>
#include "llava/error.h"
#include "llava/fs_util.h"

namespace llava::testing {

// ../shared beside the checkout (or $LLAVA_SHARED_DIR). Empty when absent, e.g. in a user's fresh clone.
inline std::string shared_dir() {
  const char* env = std::getenv("LLAVA_SHARED_DIR");
  std::string dir = env && *env ? env : LLAVA_SHARED_DIR;
  return std::filesystem::exists(dir + "/fixtures") ? dir : std::string();
}

inline std::string fixture(const std::string& rel) { return shared_dir() + "/fixtures/" + rel; }

// The message of the llava::Error that f() throws; "" when it throws none.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What a shell command did: its exit code (128 + the signal when one killed it) and its standard output.
struct CommandResult {
  int code = -1;
  std::string out;
};

// Runs a shell command line (popen); redirect in the line what else `out` should hold ("2>&1").
inline CommandResult run_shell_command(const std::string& command_line) {
  CommandResult r;
  FILE* p = popen(command_line.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t k;
  while ((k = fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, k);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

#ifdef LLAVA_BINARY
// The built llava-train with these arguments, stdout and stderr together (targets that define LLAVA_BINARY).
inline CommandResult run_llava_train(const std::string& args) {
  return run_shell_command(std::string(LLAVA_BINARY) + " " + args + " 2>&1");
}
#endif

// A loopback TCP port nobody listens on now (bind port 0, read it back, close); a pid-derived one if that fails.
inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return 29500 + ::getpid() % 1000;
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// Every folder temp_dir() made in this test process; removed when all tests are done.
inline std::vector<std::string>& temp_dirs_made() {
  static std::vector<std::string> dirs;
  return dirs;
}
class RemoveTempDirs : public ::testing::Environment {
 public:
  void TearDown() override {
    if (std::getenv("LLAVA_KEEP_TEST_DIRS")) return;  // LLAVA_KEEP_TEST_DIRS=1 keeps them for a look
    for (const auto& d : temp_dirs_made()) llava::remove_tree(d);
  }
};
[[maybe_unused]] inline ::testing::Environment* const kRemoveTempDirs =
    ::testing::AddGlobalTestEnvironment(new RemoveTempDirs);

// A fresh, empty folder /tmp/llava_test_NAME_PID (removed after the run).
inline std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("llava_test_" + name + "_" + std::to_string(::getpid()));
  llava::remove_tree(dir);
  std::filesystem::create_directories(dir);
  temp_dirs_made().push_back(dir.string());
  return dir.string();
}

}  // namespace llava::testing

// Skips the current test, with the reason, when ../shared/fixtures is not there.
#define LLAVA_REQUIRE_FIXTURES()                                                                     \
  do {                                                                                               \
    if (::llava::testing::shared_dir().empty())                                                      \
      GTEST_SKIP() << "../shared/fixtures not found (set LLAVA_SHARED_DIR): fixture comparison skipped"; \
  } while (0)
