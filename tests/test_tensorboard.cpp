// TensorBoardWriter: files read back by a reader written here (bitwise CRC32C, its own protobuf field walker),
// byte-exact records computed outside this code, and TensorBoard's own EventAccumulator where Python has it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "llava/error.h"
#include "llava/tensorboard.h"
#include "tensorboard_reader.h"
#include "test_support.h"

namespace fs = std::filesystem;
using llava::TensorBoardWriter;
using llava::testing::read_file;
using llava::testing::temp_dir;
using namespace llava::testing::tb;

namespace {

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Records produced by Python (struct.pack for the protobuf fields, crcmod's 'crc-32c' for the CRCs), not by
// the code under test: Event{wall_time 1701423784.25, file_version "brain.Event:2"} and
// Event{wall_time 1701423790.5, step 7, summary {value {tag "train/loss" simple_value 2.5}}}.
const char* const kFileVersionRecordHex =
    "1800000000000000a37f4b2209000010aa6a5ad9411a0d627261696e2e4576656e743a32844cc456";
const char* const kScalarRecordHex =
    "200000000000000029eda950090000a0ab6a5ad94110072a130a110a0a747261696e2f6c6f73731500002040b8d2dc27";

struct Scalar {
  std::string tag;
  float value;
  int64_t step;
  double wall_time;
};

}  // namespace

TEST(Crc32c, KnownVectors) {
  // RFC 3720 B.4 and the usual check value; the same expectations for the writer's and the test's CRC.
  const std::vector<std::pair<std::string, uint32_t>> vectors = {
      {"123456789", 0xE3069283u},
      {std::string(32, '\0'), 0x8A9136AAu},
      {std::string(32, '\xff'), 0x62A8AB43u},
      {[] { std::string s; for (int i = 0; i < 32; ++i) s.push_back(char(i)); return s; }(), 0x46DD794Eu},
      {"", 0u}};
  for (const auto& [bytes, expected] : vectors) {
    const uint32_t got = llava::crc32c(bytes.data(), bytes.size());
    std::printf("crc32c(%zu bytes) = 0x%08X, expected 0x%08X\n", bytes.size(), got, expected);
    EXPECT_EQ(got, expected);
    EXPECT_EQ(bitwise_crc32c(bytes), expected);
  }
  // Continuing a CRC over a second piece equals the CRC of the whole.
  EXPECT_EQ(llava::crc32c("6789", 4, llava::crc32c("12345", 5)), 0xE3069283u);
  // The mask, from its definition: ((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xa282ead8 mod 2^32.
  EXPECT_EQ(llava::tfrecord_masked_crc("123456789", 9), 0xC78AB0E5u);
}

TEST(TensorBoardWriter, FileNameAndFirstRecordAsTensorBoardWritesThem) {
  const std::string dir = temp_dir("tb_first") + "/nested/run";  // parents are created
  std::string path;
  {
    TensorBoardWriter tb(dir, 1701423784.25);
    path = tb.path();
    // Flushed at construction: the file is whole before anything else is added.
    EXPECT_EQ(read_file(path), from_hex(kFileVersionRecordHex));
  }
  const std::string name = fs::path(path).filename().string();
  const std::string prefix =
      "events.out.tfevents.1701423784." + llava::local_hostname() + "." + std::to_string(::getpid()) + ".";
  std::printf("event file: %s\n", name.c_str());
  ASSERT_EQ(name.substr(0, prefix.size()), prefix);
  const std::string uid = name.substr(prefix.size());
  ASSERT_FALSE(uid.empty());
  EXPECT_EQ(uid.find_first_not_of("0123456789"), std::string::npos) << uid;
  EXPECT_EQ(fs::path(path).parent_path(), fs::path(dir));

  // The next writer in this process gets the next number.
  TensorBoardWriter next(dir, 1701423784.75);
  EXPECT_EQ(fs::path(next.path()).filename().string(), prefix + std::to_string(std::stoi(uid) + 1));
}

TEST(TensorBoardWriter, ScalarRecordIsByteExact) {
  const std::string dir = temp_dir("tb_exact");
  TensorBoardWriter tb(dir, 1701423784.25);
  tb.add_scalar("train/loss", 2.5f, 7, 1701423790.5);
  tb.close();
  EXPECT_EQ(read_file(tb.path()), from_hex(kFileVersionRecordHex) + from_hex(kScalarRecordHex));
}

TEST(TensorBoardWriter, ScalarsReadBackByAnIndependentReader) {
  const std::string dir = temp_dir("tb_scalars");
  const std::vector<Scalar> scalars = {
      {"train/loss", 2.3617f, 1, 1701423785.125},       {"train/grad_norm", 58.519386f, 1, 1701423785.125},
      {"train/learning_rate", 5.882353e-07f, 1, 1701423785.125}, {"train/epoch", 0.0f, 0, 1701423785.5},
      {"train/loss", -1.5f, 200, 1701423790.0},          {"train/loss", 1e30f, int64_t{1} << 40, 1701423999.75},
      {std::string(300, 'x'), 3.0f, 127, 1701424000.0},  // tag over 127 bytes: a two-byte length varint
  };
  const double t0 = llava::unix_time_now();
  TensorBoardWriter tb(dir);
  for (const auto& s : scalars) tb.add_scalar(s.tag, s.value, s.step, s.wall_time);
  tb.add_scalar("train/throughput", 12.5f, 3);  // wall time: now
  tb.flush();

  const std::vector<Event> events = read_events(tb.path());
  ASSERT_EQ(events.size(), scalars.size() + 2);
  EXPECT_EQ(events[0].file_version, "brain.Event:2");
  EXPECT_EQ(events[0].fields_seen, (std::vector<uint32_t>{1, 3}));
  EXPECT_GE(events[0].wall_time, t0 - 1);
  EXPECT_LE(events[0].wall_time, llava::unix_time_now() + 1);
  for (size_t i = 0; i < scalars.size(); ++i) {
    const Event& e = events[i + 1];
    const Scalar& s = scalars[i];
    std::printf("event %zu: step %lld (expected %lld), wall %.3f (%.3f), value %.9g (%.9g)\n", i + 1,
                static_cast<long long>(e.step), static_cast<long long>(s.step), e.wall_time, s.wall_time,
                e.values.empty() ? 0.0 : e.values[0].simple_value, s.value);
    EXPECT_EQ(e.step, s.step);
    EXPECT_EQ(e.wall_time, s.wall_time);
    EXPECT_EQ(e.file_version, "");
    ASSERT_EQ(e.values.size(), 1u);
    EXPECT_EQ(e.values[0].tag, s.tag);
    EXPECT_TRUE(e.values[0].has_simple_value);  // also for 0.0: simple_value is in a oneof
    EXPECT_EQ(e.values[0].simple_value, s.value);
  }
  const Event& now = events.back();
  EXPECT_EQ(now.values.at(0).tag, "train/throughput");
  EXPECT_GE(now.wall_time, t0 - 1);
  EXPECT_LE(now.wall_time, llava::unix_time_now() + 1);
}

TEST(TensorBoardWriter, TextIsATextPluginStringTensor) {
  const std::string dir = temp_dir("tb_text");
  const std::string args = "{\n  \"learning_rate\": 2e-05,\n  \"output_dir\": \"out/\\u00e9\"\n}";
  TensorBoardWriter tb(dir);
  tb.add_text("args", args, 0, 1701423786.0);
  tb.close();
  const std::vector<Event> events = read_events(tb.path());
  ASSERT_EQ(events.size(), 2u);
  ASSERT_EQ(events[1].values.size(), 1u);
  const SummaryValue& v = events[1].values[0];
  EXPECT_EQ(v.tag, "args/text_summary");
  EXPECT_FALSE(v.has_simple_value);
  // TensorProto{dtype = DT_STRING (7), tensor_shape = {dim {size 1}}, string_val = [args]}
  std::map<uint32_t, Field> tensor;
  for (const Field& f : walk_fields(v.tensor)) tensor[f.field] = f;
  EXPECT_EQ(tensor[1].number, 7u);
  const auto shape = walk_fields(tensor[2].bytes);
  ASSERT_EQ(shape.size(), 1u);
  EXPECT_EQ(shape[0].field, 2u);
  const auto dim = walk_fields(shape[0].bytes);
  ASSERT_EQ(dim.size(), 1u);
  EXPECT_EQ(dim[0].field, 1u);
  EXPECT_EQ(dim[0].number, 1u);
  EXPECT_EQ(tensor[8].bytes, args);
  // SummaryMetadata{plugin_data = {plugin_name = "text"}}
  const auto metadata = walk_fields(v.metadata);
  ASSERT_EQ(metadata.size(), 1u);
  EXPECT_EQ(metadata[0].field, 1u);
  const auto plugin = walk_fields(metadata[0].bytes);
  ASSERT_EQ(plugin.size(), 1u);
  EXPECT_EQ(plugin[0].field, 1u);
  EXPECT_EQ(plugin[0].bytes, "text");
}

TEST(TensorBoardWriter, SessionStartRecord) {
  const std::string dir = temp_dir("tb_session");
  TensorBoardWriter tb(dir);
  tb.add_session_start(300, 1701423787.0);
  tb.close();
  const std::vector<Event> events = read_events(tb.path());
  ASSERT_EQ(events.size(), 2u);
  EXPECT_TRUE(events[1].has_session_log);
  EXPECT_EQ(events[1].session_status, 1u);  // START
  EXPECT_EQ(events[1].step, 300);
  EXPECT_EQ(events[1].wall_time, 1701423787.0);
}

TEST(TensorBoardWriter, RecordsReachTheFileOnFlush) {
  const std::string dir = temp_dir("tb_flush");
  TensorBoardWriter tb(dir);
  const size_t first = read_file(tb.path()).size();
  tb.add_scalar("train/loss", 1.0f, 1);
  EXPECT_EQ(read_file(tb.path()).size(), first);  // buffered
  tb.flush();
  EXPECT_EQ(read_events(tb.path()).size(), 2u);
  tb.close();
  tb.close();  // again: nothing
  EXPECT_THROW(tb.add_scalar("train/loss", 2.0f, 2), llava::Error);
}

TEST(TensorBoardReader, DetectsTruncationAndCorruption) {
  const std::string dir = temp_dir("tb_trunc");
  TensorBoardWriter tb(dir);
  tb.add_scalar("train/loss", 1.0f, 1, 1701423785.0);
  tb.add_scalar("train/loss", 0.5f, 2, 1701423786.0);
  tb.close();
  const std::string whole = read_file(tb.path());
  std::vector<std::string> records;
  ASSERT_EQ(read_records(whole, records), "");
  ASSERT_EQ(records.size(), 3u);
  const size_t last_start = whole.size() - (12 + records[2].size() + 4);
  // Cut inside the last record's header, its data and its data CRC: each is reported, never read as whole.
  for (size_t cut : {last_start + 5, last_start + 12 + 3, whole.size() - 1}) {
    const std::string problem = read_records(whole.substr(0, cut), records);
    std::printf("cut at %zu of %zu: %s\n", cut, whole.size(), problem.c_str());
    EXPECT_NE(problem.find("truncated"), std::string::npos) << problem;
  }
  std::string flipped = whole;
  flipped[last_start + 12 + 2] ^= 0x01;  // one bit of the last event
  EXPECT_NE(read_records(flipped, records).find("data CRC mismatch"), std::string::npos);
  flipped = whole;
  flipped[last_start] ^= 0x01;  // one bit of the last length
  EXPECT_NE(read_records(flipped, records).find("length CRC mismatch"), std::string::npos);
}

TEST(TensorBoardWriter, FolderThatCannotBeCreatedNamesIt) {
  const std::string dir = temp_dir("tb_nofolder");
  std::ofstream(dir + "/plain_file") << "x";
  const std::string bad = dir + "/plain_file/runs";  // a folder under a regular file
  try {
    TensorBoardWriter tb(bad);
    FAIL() << "no error for " << bad;
  } catch (const llava::Error& e) {
    std::printf("error: %s\n", e.what());
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
  }
}

// A file-size limit (RLIMIT_FSIZE) makes write(2) fail with EFBIG like a full disk does with ENOSPC.
TEST(TensorBoardWriter, WriteErrorNamesTheFileAndAFlushLaterContinues) {
  const std::string dir = temp_dir("tb_full");
  TensorBoardWriter tb(dir);
  const size_t first = read_file(tb.path()).size();
  for (int step = 1; step <= 20; ++step) tb.add_scalar("train/loss", 1.0f / step, step, 1701423785.0 + step);

  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto* old_handler = ::signal(SIGXFSZ, SIG_IGN);  // else the signal ends the process
  rlimit small = saved;
  small.rlim_cur = first + 100;  // room for a record and a half
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string message;
  try {
    tb.flush();
  } catch (const llava::Error& e) {
    message = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);
  std::printf("error: %s (file %zu bytes)\n", message.c_str(), read_file(tb.path()).size());
  EXPECT_NE(message.find(tb.path()), std::string::npos) << message;

  // With room again, the next flush completes the cut record and the rest.
  tb.flush();
  const std::vector<Event> events = read_events(tb.path());
  ASSERT_EQ(events.size(), 21u);
  for (int step = 1; step <= 20; ++step) {
    EXPECT_EQ(events[step].step, step);
    EXPECT_EQ(events[step].values.at(0).simple_value, 1.0f / step);
  }
}

TEST(DefaultLoggingDir, HuggingFaceFormat) {
  const char* old_tz = std::getenv("TZ");
  const std::string saved_tz = old_tz ? old_tz : "";
  ::setenv("TZ", "UTC0", 1);
  ::tzset();
  // 1701423784 = 2023-12-01 09:43:04 UTC; 1704423845 = 2024-01-05 03:04:05 UTC (date -u -d @...).
  const std::string a = llava::default_logging_dir("out", 1701423784, "node7");
  const std::string b = llava::default_logging_dir("out/", 1704423845, "gpu-host.local");
  const std::string c = llava::default_logging_dir("", 1701423784, "h");
  if (old_tz) ::setenv("TZ", saved_tz.c_str(), 1); else ::unsetenv("TZ");
  ::tzset();
  std::printf("%s | %s | %s\n", a.c_str(), b.c_str(), c.c_str());
  EXPECT_EQ(a, "out/runs/Dec01_09-43-04_node7");
  EXPECT_EQ(b, "out/runs/Jan05_03-04-05_gpu-host.local");
  EXPECT_EQ(c, "runs/Dec01_09-43-04_h");
}

namespace {

// TensorBoard's EventAccumulator over a folder, as JSON {"scalars": {tag: [[step, wall, value]]},
// "texts": {tag: [[step, [strings]]]}}; "" when it failed (the output is in `log`).
std::string run_event_accumulator(const std::string& dir, std::string& log) {
  const std::string script = dir + "/../read_events.py";
  std::ofstream(script) << R"(import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.TENSORS: 0})
acc.Reload()
out = {"scalars": {}, "texts": {}}
for tag in acc.Tags()["scalars"]:
    out["scalars"][tag] = [[e.step, e.wall_time, e.value] for e in acc.Scalars(tag)]
for tag in acc.Tags()["tensors"]:
    out["texts"][tag] = [[e.step, [s.decode("utf-8") for s in e.tensor_proto.string_val]] for e in acc.Tensors(tag)]
print("RESULT " + json.dumps(out))
)";
  FILE* pipe = ::popen(("python3 '" + script + "' '" + dir + "' 2>&1").c_str(), "r");
  if (!pipe) return "";
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof buf, pipe)) log.append(buf, n);
  if (::pclose(pipe) != 0) return "";
  const size_t at = log.rfind("RESULT ");
  return at == std::string::npos ? "" : log.substr(at + 7);
}

}  // namespace

TEST(TensorBoardPython, EventAccumulatorReadsScalarsTextAndPurge) {
  if (std::system("python3 -c 'import tensorboard' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 with the tensorboard package not found: TensorBoard's own reader not run";
  const std::string dir = temp_dir("tb_python") + "/run";
  {
    // A first run to step 4, then one resumed from its checkpoint at step 2: TensorBoard keeps steps 1-2 of the
    // first file. Both write a session start (newer TensorBoards ignore a run's first one).
    TensorBoardWriter first(dir, 1701423784.0);
    first.add_session_start(1, 1701423784.0);
    first.add_text("args", "{\"learning_rate\": 2e-05}", 0, 1701423784.5);
    for (int step = 1; step <= 4; ++step) first.add_scalar("train/loss", 10.0f + step, step, 1701423790.0 + step);
    first.close();
    TensorBoardWriter resumed(dir, 1701423800.0);
    resumed.add_session_start(3, 1701423800.0);
    for (int step = 3; step <= 5; ++step) resumed.add_scalar("train/loss", 20.0f + step, step, 1701423810.0 + step);
    resumed.add_scalar("train/grad_norm", 0.125f, 5, 1701423815.0);
    resumed.close();
  }
  std::string log;
  const std::string result = run_event_accumulator(dir, log);
  ASSERT_NE(result, "") << "EventAccumulator failed:\n" << log;
  std::printf("EventAccumulator: %s\n", result.c_str());
  const auto got = nlohmann::json::parse(result);
  const auto expected = nlohmann::json::parse(R"({
    "scalars": {
      "train/loss": [[1, 1701423791.0, 11.0], [2, 1701423792.0, 12.0],
                     [3, 1701423813.0, 23.0], [4, 1701423814.0, 24.0], [5, 1701423815.0, 25.0]],
      "train/grad_norm": [[5, 1701423815.0, 0.125]]},
    "texts": {"args/text_summary": [[0, ["{\"learning_rate\": 2e-05}"]]]}})");
  EXPECT_EQ(got, expected) << "got " << got.dump() << "\nexpected " << expected.dump();
}
