#pragma once
// TensorBoard event files, written the way TensorBoard's own EventFileWriter (used by torch's SummaryWriter and
// so by HF's `--report_to tensorboard`) writes them. No torch and no protobuf library here.
//
// File:   LOGDIR/events.out.tfevents.<unix seconds, 10 digits>.<hostname>.<pid>.<n>  (n counts writers in this
//         process from 0, as TensorBoard's global uid).
// Record: u64 little-endian length, u32 masked CRC32C of those 8 bytes, the data, u32 masked CRC32C of the data
//         (TFRecord framing; masked = ((crc >> 15) | (crc << 17)) + 0xa282ead8).
// Data:   a serialized tensorboard.Event: wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
//         summary = 5 (Summary{value = 1: Value{tag = 1, simple_value = 2 (float), tensor = 8, metadata = 9}}),
//         session_log = 7 (SessionLog{status = 1}). The first record is {wall_time, file_version: "brain.Event:2"}.
//
// How the trainer uses it (rank 0 only; HF's TensorBoardCallback does the same):
//   std::string dir = logging_dir.empty() ? default_logging_dir(output_dir, std::time(nullptr), local_hostname())
//                                         : logging_dir;
//   TensorBoardWriter tb(dir);                        // creates dir, writes and flushes the file_version record
//   tb.add_session_start(resumed_global_step + 1);    // 1 on a fresh run; see add_session_start
//   tb.add_text("args", args_json, 0);                // shows as tag "args/text_summary" (Text tab)
//   per logging step: tb.add_scalar("train/loss", loss, global_step); ...; tb.flush();
//   at the end: tb.close();                           // throws llava::Error if the last write failed
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <optional>
#include <string>

namespace llava {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), continuing from `crc` (0 to start):
// crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);
// TFRecord's masked CRC32C of the bytes.
uint32_t tfrecord_masked_crc(const void* data, size_t size);

// HF TrainingArguments' default logging_dir: os.path.join(output_dir, "runs", "<%b%d_%H-%M-%S>_<hostname>") with
// `now` in local time and English month abbreviations, e.g. "out/runs/Dec01_09-43-04_node7".
std::string default_logging_dir(const std::string& output_dir, std::time_t now, const std::string& hostname);
// This machine's host name (gethostname; Python's socket.gethostname()); "localhost" if it cannot be read.
std::string local_hostname();
// Seconds since the epoch, with sub-second precision (Python's time.time()).
double unix_time_now();

class TensorBoardWriter {
 public:
  // Creates `log_dir` (and its parents) and a new event file in it, and writes and flushes the file_version
  // record. `wall_time` (default: now) names the file and stamps that record. Throws llava::Error naming the
  // folder or the file when either cannot be created or written.
  explicit TensorBoardWriter(const std::string& log_dir, std::optional<double> wall_time = std::nullopt);
  // Flushes and closes; an error then cannot be thrown, so it is printed to stderr (call close() to see it).
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  const std::string& path() const { return path_; }  // the event file

  // One scalar (simple_value, float32 as in TensorBoard) for `tag` at `step`; wall_time default: now.
  void add_scalar(const std::string& tag, float value, int64_t step, std::optional<double> wall_time = std::nullopt);
  // Text for the Text tab under tag "<tag>/text_summary" (as torch's SummaryWriter.add_text): a DT_STRING tensor
  // of shape [1] with plugin "text".
  void add_text(const std::string& tag, const std::string& text, int64_t step,
                std::optional<double> wall_time = std::nullopt);
  // SessionLog START at `step`: TensorBoard then drops the events at steps >= `step` that earlier files in this
  // folder hold (what torch's SummaryWriter(purge_step=...) writes), so the steps an interrupted run logged after
  // its last checkpoint do not show twice. Newer TensorBoards ignore the first START of a folder, so every run
  // writes one right after opening: fresh runs at step 1, resumed ones at (checkpoint's global step + 1).
  void add_session_start(int64_t step, std::optional<double> wall_time = std::nullopt);

  // Writes the records added so far to the file (no fsync, like TensorBoard's flush). On a write error
  // (disk full, ...) throws llava::Error naming the file; the bytes not yet written are kept, so a later flush
  // continues exactly where the file ends (a record cut by the error is completed, not restarted).
  void flush();
  // flush(), then closes the file, also when the flush failed (then llava::Error naming it, and the records not
  // written are dropped). Adding after close() throws; close() again does nothing.
  void close();

 private:
  void add_event(const std::string& event_bytes);
  std::string path_;
  int fd_ = -1;
  std::string pending_;  // framed records not yet written
};

}  // namespace llava
