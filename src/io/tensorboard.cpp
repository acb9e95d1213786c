// TensorBoard event-file writer: TFRecord framing and a hand-written protobuf encoder for the few Event fields
// written (see tensorboard.h for the layout and the field numbers).
#include "llava/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "llava/error.h"

namespace llava {
namespace {

// Byte-at-a-time table for the reflected Castagnoli polynomial: entry i is the CRC of the byte i.
constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int bit = 0; bit < 8; ++bit) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}
constexpr std::array<uint32_t, 256> kCrc32cTable = make_crc32c_table();

// Protobuf wire format: each field is a varint key (field_number << 3 | wire_type), then its payload.
enum WireType : uint32_t { kVarint = 0, kFixed64 = 1, kLengthDelimited = 2, kFixed32 = 5 };

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void put_key(std::string& out, uint32_t field, WireType type) { put_varint(out, (uint64_t{field} << 3) | type); }

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_double(std::string& out, uint32_t field, double v) {
  uint64_t bits;
  std::memcpy(&bits, &v, 8);
  put_key(out, field, kFixed64);
  put_le(out, bits, 8);
}

void put_float(std::string& out, uint32_t field, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  put_key(out, field, kFixed32);
  put_le(out, bits, 4);
}

// int64 and enums: negative values are their 64-bit two's complement (10 bytes), as protobuf does.
void put_int(std::string& out, uint32_t field, int64_t v) {
  put_key(out, field, kVarint);
  put_varint(out, static_cast<uint64_t>(v));
}

// Strings, bytes and nested messages.
void put_bytes(std::string& out, uint32_t field, const std::string& bytes) {
  put_key(out, field, kLengthDelimited);
  put_varint(out, bytes.size());
  out += bytes;
}

// Event{wall_time = 1, step = 2 (omitted when 0, as proto3 serializes)} followed by the event's payload field.
std::string event_header(double wall_time, int64_t step) {
  std::string event;
  put_double(event, 1, wall_time);
  if (step != 0) put_int(event, 2, step);
  return event;
}

// The text plugin's Summary.Value: tag = 1, tensor = 8 (DT_STRING = 7, shape [1], string_val = 8), metadata = 9.
std::string text_value(const std::string& tag, const std::string& text) {
  std::string dim, shape, tensor, plugin_data, metadata, value;
  put_int(dim, 1, 1);  // Dim.size
  put_bytes(shape, 2, dim);  // TensorShapeProto.dim
  put_int(tensor, 1, 7);  // TensorProto.dtype = DT_STRING
  put_bytes(tensor, 2, shape);
  put_bytes(tensor, 8, text);  // string_val
  put_bytes(plugin_data, 1, "text");  // PluginData.plugin_name; content (TextPluginData{version 0}) is empty
  put_bytes(metadata, 1, plugin_data);
  put_bytes(value, 1, tag);
  put_bytes(value, 8, tensor);
  put_bytes(value, 9, metadata);
  return value;
}

// Counts the writers this process made: the last part of the file name (TensorBoard's _global_uid).
std::atomic<int> writers_made{0};

std::string errno_text(int err) { return std::error_code(err, std::generic_category()).message(); }

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = kCrc32cTable[(crc ^ bytes[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t tfrecord_masked_crc(const void* data, size_t size) {
  const uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

std::string default_logging_dir(const std::string& output_dir, std::time_t now, const std::string& hostname) {
  // Python's %b without setlocale: the C locale's English abbreviations (std::strftime would follow ours).
  static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm local{};
  localtime_r(&now, &local);
  char stamp[32];
  std::snprintf(stamp, sizeof stamp, "%s%02d_%02d-%02d-%02d", kMonths[local.tm_mon], local.tm_mday, local.tm_hour,
                local.tm_min, local.tm_sec);
  const std::string run = std::string("runs/") + stamp + "_" + hostname;
  if (output_dir.empty()) return run;  // os.path.join("", p) == p
  return output_dir.back() == '/' ? output_dir + run : output_dir + "/" + run;
}

std::string local_hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

double unix_time_now() {
  using namespace std::chrono;
  return duration<double>(system_clock::now().time_since_epoch()).count();
}

TensorBoardWriter::TensorBoardWriter(const std::string& log_dir, std::optional<double> wall_time) {
  const double created = wall_time.value_or(unix_time_now());
  std::error_code ec;
  std::filesystem::create_directories(log_dir, ec);
  if (ec) throw Error(log_dir + ": cannot create the TensorBoard logging folder: " + ec.message());
  char name[64];
  std::snprintf(name, sizeof name, "events.out.tfevents.%010lld.", static_cast<long long>(std::floor(created)));
  path_ = (std::filesystem::path(log_dir) /
           (name + local_hostname() + "." + std::to_string(::getpid()) + "." + std::to_string(writers_made++)))
              .string();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) throw Error(path_ + ": cannot create the TensorBoard event file: " + errno_text(errno));
  std::string event = event_header(created, 0);
  put_bytes(event, 3, "brain.Event:2");
  add_event(event);
  flush();  // the file is a valid event file from here on, and an unwritable disk shows now
}

TensorBoardWriter::~TensorBoardWriter() {
  try {
    close();
  } catch (const std::exception& e) {
    std::cerr << "warning: " << e.what() << "\n";
  }
}

void TensorBoardWriter::add_event(const std::string& event_bytes) {
  if (fd_ < 0) throw Error(path_ + ": TensorBoard event file already closed");
  std::string length;
  put_le(length, event_bytes.size(), 8);
  pending_ += length;
  put_le(pending_, tfrecord_masked_crc(length.data(), length.size()), 4);
  pending_ += event_bytes;
  put_le(pending_, tfrecord_masked_crc(event_bytes.data(), event_bytes.size()), 4);
  // Bounds the memory a caller that never flushes would use.
  if (pending_.size() >= (1u << 20)) flush();
}

void TensorBoardWriter::add_scalar(const std::string& tag, float value, int64_t step, std::optional<double> wall_time) {
  std::string summary_value;
  put_bytes(summary_value, 1, tag);
  put_float(summary_value, 2, value);  // in a oneof: written even when 0
  std::string summary;
  put_bytes(summary, 1, summary_value);
  std::string event = event_header(wall_time.value_or(unix_time_now()), step);
  put_bytes(event, 5, summary);
  add_event(event);
}

void TensorBoardWriter::add_text(const std::string& tag, const std::string& text, int64_t step,
                                 std::optional<double> wall_time) {
  std::string summary;
  put_bytes(summary, 1, text_value(tag + "/text_summary", text));
  std::string event = event_header(wall_time.value_or(unix_time_now()), step);
  put_bytes(event, 5, summary);
  add_event(event);
}

void TensorBoardWriter::add_session_start(int64_t step, std::optional<double> wall_time) {
  std::string session_log;
  put_int(session_log, 1, 1);  // status = START
  std::string event = event_header(wall_time.value_or(unix_time_now()), step);
  put_bytes(event, 7, session_log);
  add_event(event);
}

void TensorBoardWriter::flush() {
  if (fd_ < 0) return;
  size_t written = 0;
  while (written < pending_.size()) {
    const ssize_t n = ::write(fd_, pending_.data() + written, pending_.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : ENOSPC;
      pending_.erase(0, written);  // what reached the file is not written twice
      throw Error(path_ + ": cannot write TensorBoard events: " + errno_text(err));
    }
    written += static_cast<size_t>(n);
  }
  pending_.clear();
}

void TensorBoardWriter::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  try {
    flush();
  } catch (...) {
    fd_ = -1;  // closed either way: the records that could not be written are dropped
    ::close(fd);
    throw;
  }
  fd_ = -1;
  if (::close(fd) != 0) throw Error(path_ + ": cannot close the TensorBoard event file: " + errno_text(errno));
}

}  // namespace llava
