#include "llava/train/log.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "llava/error.h"

namespace llava {

std::string py_repr(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == 0.0) return std::signbit(x) ? "-0.0" : "0.0";
  // Shortest round-trip digits from to_chars (like CPython's dtoa mode 0), then CPython's layout rule:
  // with value = 0.DIGITS x 10^decpt, exponent form when decpt <= -4 or decpt > 16.
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string s(buf, r.ptr);  // "-5.882352941176471e-07"
  std::string sign;
  if (s[0] == '-') {
    sign = "-";
    s = s.substr(1);
  }
  const size_t e = s.find('e');
  std::string digits = s.substr(0, e);
  if (digits.size() > 1) digits.erase(1, 1);  // drop the '.'
  const int exp10 = std::atoi(s.c_str() + e + 1);
  const int decpt = exp10 + 1;
  if (decpt <= -4 || decpt > 16) {
    std::string mant = digits.substr(0, 1);
    if (digits.size() > 1) mant += "." + digits.substr(1);
    char ebuf[16];
    std::snprintf(ebuf, sizeof ebuf, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    return sign + mant + ebuf;
  }
  std::string out;
  if (decpt <= 0) {
    out = "0." + std::string(-decpt, '0') + digits;
  } else if (static_cast<size_t>(decpt) >= digits.size()) {
    out = digits + std::string(decpt - digits.size(), '0') + ".0";
  } else {
    out = digits.substr(0, decpt) + "." + digits.substr(decpt);
  }
  return sign + out;
}

double py_round(double x, int ndigits) {
  if (!std::isfinite(x)) return x;
  // glibc's printf rounds the exact binary value correctly (ties to even), as CPython's round() does via dtoa.
  char buf[512];
  std::snprintf(buf, sizeof buf, "%.*f", ndigits, x);
  return std::strtod(buf, nullptr);
}

LogDict& LogDict::add(const std::string& key, double v) {
  items_.emplace_back(key, v);
  return *this;
}

LogDict& LogDict::add_int(const std::string& key, int64_t v) {
  items_.emplace_back(key, v);
  return *this;
}

std::string LogDict::to_python() const {
  std::string s = "{";
  for (size_t i = 0; i < items_.size(); ++i) {
    if (i) s += ", ";
    s += "'" + items_[i].first + "': ";
    const auto& v = items_[i].second;
    s += std::holds_alternative<double>(v) ? py_repr(std::get<double>(v)) : std::to_string(std::get<int64_t>(v));
  }
  return s + "}";
}

std::string format_interval(double seconds) {
  const int64_t t = static_cast<int64_t>(seconds < 0 ? 0 : seconds);
  const int64_t mins = t / 60, s = t % 60, h = mins / 60, m = mins % 60;
  char buf[48];
  if (h) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)h, (long long)m, (long long)s);
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", (long long)m, (long long)s);
  return buf;
}

namespace {

// Display width of a UTF-8 string (every code point one cell; the bar uses only such characters).
size_t display_width(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

int terminal_columns() {
  struct winsize w {};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 0) return w.ws_col;
  return 0;
}

}  // namespace

// tqdm.format_meter with unit "it", no prefix/postfix, unicode bar.
std::string Progress::format_bar(int64_t n, int64_t total, double elapsed, double rate, int ncols) {
  char buf[64];
  std::string rate_fmt;
  if (rate > 0 && 1.0 / rate > 1.0) {
    std::snprintf(buf, sizeof buf, "%5.2fs/it", 1.0 / rate);
    rate_fmt = buf;
  } else if (rate > 0) {
    std::snprintf(buf, sizeof buf, "%5.2fit/s", rate);
    rate_fmt = buf;
  } else {
    rate_fmt = "?it/s";
  }
  const std::string remaining = rate > 0 ? format_interval(static_cast<double>(total - n) / rate) : "?";
  const double frac = total > 0 ? static_cast<double>(n) / static_cast<double>(total) : 0.0;
  std::snprintf(buf, sizeof buf, "%3.0f%%|", frac * 100.0);
  const std::string l_bar = buf;
  const std::string r_bar = "| " + std::to_string(n) + "/" + std::to_string(total) + " [" + format_interval(elapsed) +
                            "<" + remaining + ", " + rate_fmt + "]";
  if (ncols == 0) return l_bar.substr(0, l_bar.size() - 1) + r_bar.substr(1);
  int n_bars = ncols < 0 ? 10 : std::max<int>(1, ncols - static_cast<int>(display_width(l_bar + r_bar)));
  static const char* kCharset[] = {" ", "\u258F", "\u258E", "\u258D", "\u258C", "\u258B", "\u258A", "\u2589", "\u2588"};
  const int nsyms = 8;
  const int64_t filled = static_cast<int64_t>(frac * n_bars * nsyms);
  const int64_t bar_length = filled / nsyms, frac_length = filled % nsyms;
  std::string bar;
  for (int64_t i = 0; i < bar_length && i < n_bars; ++i) bar += kCharset[8];
  if (bar_length < n_bars) {
    bar += kCharset[frac_length];
    for (int64_t i = 0; i < n_bars - bar_length - 1; ++i) bar += " ";
  }
  return l_bar + bar + r_bar;
}

Progress::Progress(int64_t total, int64_t initial, bool is_tty, double plain_every_s)
    : total_(total), initial_(initial), n_(initial), tty_(is_tty), plain_every_s_(plain_every_s) {
  start_ = last_ = std::chrono::steady_clock::now();
  if (tty_) draw();
}

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::update(int64_t n) {
  const auto now = std::chrono::steady_clock::now();
  const double dt = std::chrono::duration<double>(now - last_).count();
  const int64_t dn = n - n_;
  last_ = now;
  n_ = n;
  if (dn > 0) {
    // tqdm's EMA (smoothing 0.3) of seconds per step, bias-corrected by starting from the first sample.
    const double per = dt / static_cast<double>(dn);
    ema_dt_ = ema_dt_ == 0.0 ? per : 0.3 * per + 0.7 * ema_dt_;
  }
  if (tty_) {
    draw();
    return;
  }
  const double t = elapsed();
  if (n_ == initial_ + 1 || n_ == total_ || t - last_plain_ >= plain_every_s_) {
    last_plain_ = t;
    std::cerr << format_bar(n_, total_, t, ema_dt_ > 0 ? 1.0 / ema_dt_ : 0.0, 0) << "\n" << std::flush;
  }
}

void Progress::draw() {
  int cols = terminal_columns();
  std::cerr << "\r" << format_bar(n_, total_, elapsed(), ema_dt_ > 0 ? 1.0 / ema_dt_ : 0.0, cols > 0 ? cols - 1 : -1)
            << std::flush;
}

void Progress::print_line(const std::string& line) {
  if (tty_ && !closed_) std::cerr << "\r\033[K" << std::flush;
  std::cout << line << "\n" << std::flush;
  if (tty_ && !closed_) draw();
}

void Progress::close() {
  if (closed_) return;
  closed_ = true;
  if (tty_) std::cerr << "\n" << std::flush;
}

void MetricsWriter::open(const std::string& path, int64_t resume_step) {
  if (resume_step >= 0) {
    // Keep the lines of steps the checkpoint covers; later ones will be written again by this run.
    std::ifstream in(path);
    std::vector<std::string> keep;
    std::string line;
    while (std::getline(in, line)) {
      auto pos = line.find("\"step\":");
      if (pos == std::string::npos) continue;
      long long step = std::atoll(line.c_str() + pos + 7);
      if (step <= resume_step) keep.push_back(line);
    }
    in.close();
    std::ofstream rewrite(path, std::ios::trunc);
    for (const auto& l : keep) rewrite << l << "\n";
  }
  out_.open(path, resume_step >= 0 ? std::ios::app : std::ios::trunc);
  if (!out_) throw Error(path + ": cannot write");
}

void MetricsWriter::write(const std::string& json_line) {
  out_ << json_line << "\n";
  out_.flush();
}

}  // namespace llava
