#pragma once
// An independent reader of TensorBoard event files for tests (written from the TFRecord and protobuf wire
// formats, not from the writer): CRCs checked bit by bit, Event / Summary fields walked by hand.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.h"

namespace llava::testing::tb {

// CRC-32C one bit at a time (the writer uses a byte table).
inline uint32_t bitwise_crc32c(const std::string& bytes) {
  uint32_t crc = 0xffffffffu;
  for (unsigned char b : bytes) {
    crc ^= b;
    for (int i = 0; i < 8; ++i) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

inline uint32_t masked(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

inline uint64_t read_le(const std::string& s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{static_cast<unsigned char>(s[at + i])} << (8 * i);
  return v;
}

// Splits a TFRecord file into its records, checking both CRCs of each. Returns "" or what is wrong.
inline std::string read_records(const std::string& file, std::vector<std::string>& records) {
  records.clear();
  size_t at = 0;
  while (at < file.size()) {
    if (file.size() - at < 12) return "truncated record header at byte " + std::to_string(at);
    const uint64_t length = read_le(file, at, 8);
    if (read_le(file, at + 8, 4) != masked(bitwise_crc32c(file.substr(at, 8))))
      return "length CRC mismatch at byte " + std::to_string(at);
    if (file.size() - at - 12 < length + 4) return "truncated record data at byte " + std::to_string(at);
    const std::string data = file.substr(at + 12, length);
    if (read_le(file, at + 12 + length, 4) != masked(bitwise_crc32c(data)))
      return "data CRC mismatch at byte " + std::to_string(at);
    records.push_back(data);
    at += 12 + length + 4;
  }
  return "";
}

// One protobuf field: varint and fixed payloads in `number`, length-delimited ones in `bytes`.
struct Field {
  uint32_t field = 0, wire = 0;
  uint64_t number = 0;
  std::string bytes;
};

inline uint64_t walk_varint(const std::string& s, size_t& at) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (at >= s.size()) throw std::runtime_error("varint runs past the message");
    const auto b = static_cast<unsigned char>(s[at++]);
    v |= uint64_t{b & 0x7fu} << shift;
    if (!(b & 0x80)) return v;
  }
  throw std::runtime_error("varint longer than 10 bytes");
}

inline std::vector<Field> walk_fields(const std::string& s) {
  std::vector<Field> fields;
  size_t at = 0;
  while (at < s.size()) {
    Field f;
    const uint64_t key = walk_varint(s, at);
    f.field = static_cast<uint32_t>(key >> 3);
    f.wire = static_cast<uint32_t>(key & 7);
    const size_t fixed = f.wire == 1 ? 8 : f.wire == 5 ? 4 : 0;
    if (f.wire == 0) {
      f.number = walk_varint(s, at);
    } else if (fixed) {
      if (s.size() - at < fixed) throw std::runtime_error("fixed field runs past the message");
      f.number = read_le(s, at, static_cast<int>(fixed));
      at += fixed;
    } else if (f.wire == 2) {
      const uint64_t n = walk_varint(s, at);
      if (s.size() - at < n) throw std::runtime_error("bytes field runs past the message");
      f.bytes = s.substr(at, n);
      at += n;
    } else {
      throw std::runtime_error("unexpected wire type " + std::to_string(f.wire));
    }
    fields.push_back(f);
  }
  return fields;
}

inline double as_double(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, 8);
  return d;
}
inline float as_float(uint64_t bits) {
  const auto b32 = static_cast<uint32_t>(bits);
  float f;
  std::memcpy(&f, &b32, 4);
  return f;
}

// The parts of a tensorboard.Event these tests look at.
struct SummaryValue {
  std::string tag;
  bool has_simple_value = false;
  float simple_value = 0;
  std::string tensor, metadata;  // serialized sub-messages
};
struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<SummaryValue> values;
  bool has_session_log = false;
  uint64_t session_status = 0;
  std::vector<uint32_t> fields_seen;
};

inline Event parse_event(const std::string& data) {
  Event e;
  for (const Field& f : walk_fields(data)) {
    e.fields_seen.push_back(f.field);
    if (f.field == 1 && f.wire == 1) e.wall_time = as_double(f.number);
    if (f.field == 2 && f.wire == 0) e.step = static_cast<int64_t>(f.number);
    if (f.field == 3 && f.wire == 2) e.file_version = f.bytes;
    if (f.field == 7 && f.wire == 2) {
      e.has_session_log = true;
      for (const Field& s : walk_fields(f.bytes))
        if (s.field == 1) e.session_status = s.number;
    }
    if (f.field != 5 || f.wire != 2) continue;
    for (const Field& v : walk_fields(f.bytes)) {  // Summary.value
      if (v.field != 1) continue;
      SummaryValue sv;
      for (const Field& x : walk_fields(v.bytes)) {
        if (x.field == 1) sv.tag = x.bytes;
        if (x.field == 2 && x.wire == 5) sv.has_simple_value = true, sv.simple_value = as_float(x.number);
        if (x.field == 8) sv.tensor = x.bytes;
        if (x.field == 9) sv.metadata = x.bytes;
      }
      e.values.push_back(sv);
    }
  }
  return e;
}

inline std::vector<Event> read_events(const std::string& path) {
  std::vector<std::string> records;
  const std::string problem = read_records(read_file(path), records);
  EXPECT_EQ(problem, "") << path;
  std::vector<Event> events;
  for (const auto& r : records) events.push_back(parse_event(r));
  return events;
}

}  // namespace llava::testing::tb
