#pragma once
// What training prints and writes, in the shapes LLaVA users know from the HF Trainer:
//   stdout  {'loss': 2.3617, 'grad_norm': 58.519387034620586, 'learning_rate': 5.882352941176471e-07, 'epoch': 0.0}
//   stderr  a tqdm bar on a terminal (  3%|▎         | 150/5198 [17:20<9:43:05,  6.93s/it]), plain lines otherwise
//   output_dir/metrics.jsonl  one JSON object per optimizer step
// No torch here.
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace llava {

// Python's repr(float): the shortest string that reads back to the same double, fixed notation for
// 1e-4 <= |x| < 1e16 ("0.0001", "2.0", "10.948846817016602"), else exponent form ("1e-05", "5.88e-07", "1e+16").
std::string py_repr(double x);
// Python's round(x, ndigits): the double nearest to x correctly rounded to ndigits decimals (ties to even on
// the exact binary value, as CPython).
double py_round(double x, int ndigits);

// One HF log dict, kept in insertion order: values are doubles (printed with py_repr) or integers.
class LogDict {
 public:
  using Value = std::variant<double, int64_t>;
  LogDict& add(const std::string& key, double v);
  LogDict& add_int(const std::string& key, int64_t v);
  std::string to_python() const;  // {'loss': 2.3617, 'epoch': 0.33}
  const std::vector<std::pair<std::string, Value>>& items() const { return items_; }

 private:
  std::vector<std::pair<std::string, Value>> items_;
};

// tqdm's format_interval: 1:02:03 / 02:03.
std::string format_interval(double seconds);

// The progress display. On a terminal: a tqdm bar redrawn in place (width from the terminal, as tqdm); log
// lines printed through print_line() clear the bar first and redraw it after, like tqdm.write. Elsewhere:
// a plain line per update at most every `plain_every_s` seconds (and always for the first and last step).
class Progress {
 public:
  Progress(int64_t total, int64_t initial, bool is_tty, double plain_every_s = 10.0);
  void update(int64_t n);                   // n = steps done so far
  void print_line(const std::string& line);  // to stdout, without garbling the bar
  void close();

  // The bar text for n of total after `elapsed` seconds at `rate` it/s (0 = unknown); `ncols` <= 0: 10-cell bar.
  static std::string format_bar(int64_t n, int64_t total, double elapsed, double rate, int ncols);

 private:
  int64_t total_, initial_, n_;
  bool tty_;
  double plain_every_s_, last_plain_ = -1e30;
  double ema_dt_ = 0.0;  // smoothed seconds per step (tqdm's smoothing 0.3)
  std::chrono::steady_clock::time_point start_, last_;
  bool closed_ = false;
  void draw();
  double elapsed() const;
};

// output_dir/metrics.jsonl: appended (a resumed run continues the file after dropping lines past its step).
class MetricsWriter {
 public:
  MetricsWriter() = default;
  // resume_step >= 0: keep only lines with "step" <= resume_step (a run interrupted after its last checkpoint
  // wrote steps that the resumed run will write again).
  void open(const std::string& path, int64_t resume_step);
  void write(const std::string& json_line);
  bool is_open() const { return out_.is_open(); }

 private:
  std::ofstream out_;
};

}  // namespace llava
