// Reading an image file's bytes: only regular files are read, every failure is an llava::Error that
// names the file and says why (a folder used to be "read" as a huge size and die with std::bad_alloc).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "llava/error.h"
#include "llava/image.h"

namespace llava {
namespace {

const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

struct Fd {
  int fd;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::vector<uint8_t> read_image_file(const std::string& path) {
  const std::string name = "image file '" + path + "'";
  // O_NONBLOCK: opening a FIFO for reading must not wait for a writer; it is rejected right after.
  Fd file{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  if (file.fd < 0) throw Error("cannot read " + name + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) throw Error("cannot read " + name + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw Error(name + " is " + file_kind(st.st_mode) + ", not an image file");
  if (st.st_size == 0) throw Error(name + " is empty (0 bytes)");
  std::vector<uint8_t> bytes;
  try {
    bytes.resize(static_cast<size_t>(st.st_size));
  } catch (const std::bad_alloc&) {
    throw Error(name + " is too large to read (" + std::to_string(st.st_size) + " bytes)");
  }
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(file.fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error("error reading " + name + ": " + std::strerror(errno));
    if (n == 0) break;  // shrank while being read: decode what is there (a cut image fails as truncated)
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  if (bytes.empty()) throw Error(name + " is empty (0 bytes)");
  return bytes;
}

RgbImage load_image_file(const std::string& path, int min_short_side) {
  std::vector<uint8_t> bytes = read_image_file(path);
  try {
    return decode_image(bytes.data(), bytes.size(), min_short_side);
  } catch (const Error& e) {
    throw Error("image file '" + path + "': " + e.what());
  }
}

}  // namespace llava
