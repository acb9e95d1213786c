#include "llava/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "llava/error.h"

namespace llava {
namespace {

FileStamp stamp_of(const struct stat& st) {
  return {static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

size_t page_size() {
  static const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

FileStamp file_stamp(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw Error(path + ": " + std::strerror(errno));
  return stamp_of(st);
}

std::string describe_change(const FileStamp& was, const FileStamp& now) {
  if (was.size != now.size) return "size " + std::to_string(was.size) + " -> " + std::to_string(now.size) + " bytes";
  return "modification time changed";
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> f(new MappedFile);
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(f->fd_, &st) != 0) throw Error(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw Error(path + ": not a regular file");
  f->stamp_ = stamp_of(st);
  f->size_ = static_cast<size_t>(st.st_size);
  char* real = ::realpath(path.c_str(), nullptr);
  f->real_path_ = real ? real : path;
  std::free(real);
  // One reservation of file + padding (anonymous zero pages), the file mapped over its start: the bytes
  // after the end read as zeros whatever the file's size.
  const size_t page = page_size();
  f->mapped_ = (f->size_ + kPadding + page - 1) / page * page;
  void* base = ::mmap(nullptr, f->mapped_, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) throw Error(path + ": cannot map " + std::to_string(f->size_) + " bytes: " + std::strerror(errno));
  f->data_ = static_cast<const char*>(base);
  if (f->size_ > 0 && ::mmap(base, f->size_, PROT_READ, MAP_PRIVATE | MAP_FIXED, f->fd_, 0) == MAP_FAILED)
    throw Error(path + ": cannot map: " + std::strerror(errno));  // the destructor unmaps the reservation
  return f;
}

std::shared_ptr<const MappedFile> MappedFile::from_memory(std::string bytes, const std::string& name) {
  std::shared_ptr<MappedFile> f(new MappedFile);
  f->path_ = f->real_path_ = name;
  f->size_ = bytes.size();
  f->memory_ = std::move(bytes);
  f->memory_.append(kPadding, '\0');
  f->data_ = f->memory_.data();
  f->stamp_ = {f->size_, 0};
  return f;
}

MappedFile::~MappedFile() {
  if (mapped_ > 0) ::munmap(const_cast<char*>(data_), mapped_);
  if (fd_ >= 0) ::close(fd_);
}

FileStamp MappedFile::current_stamp() const {
  if (fd_ < 0) return stamp_;
  struct stat st;
  if (::fstat(fd_, &st) != 0) throw Error(path_ + ": cannot stat: " + std::strerror(errno));
  return stamp_of(st);
}

void MappedFile::release(size_t begin, size_t end) const {
  if (mapped_ == 0) return;
  const size_t page = page_size();
  begin = begin / page * page;
  end = std::min(mapped_, (end + page - 1) / page * page);
  if (end > begin) ::madvise(const_cast<char*>(data_) + begin, end - begin, MADV_DONTNEED);
}

void MappedFile::will_need(size_t begin, size_t end) const {
  if (mapped_ == 0 || begin >= size_) return;
  const size_t page = page_size();
  begin = begin / page * page;
  end = std::min(size_, end);
  if (end > begin) ::madvise(const_cast<char*>(data_) + begin, end - begin, MADV_WILLNEED);
}

}  // namespace llava
