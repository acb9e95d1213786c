// Benchmark 8 (helper): the data index alone. Opens a data file (.json, .jsonl, .yaml) the way training
// does, prints {"samples", "seconds", "peak_rss_mib"} as JSON; --dump FILE writes "id<TAB>modality_length<TAB>
// image_count" per sample (bench/data_scale.py checks them against Python's str.split on the same file).
//
//   bench_data_index DATA [--cache_dir DIR] [--dump FILE] [--samples N]
// --samples N also reads the first N samples (Dataset::sample) and reports their rate.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include "llava/dataset.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: bench_data_index DATA [--cache_dir DIR] [--dump FILE] [--samples N]\n";
    return 2;
  }
  std::string data = argv[1], dump;
  llava::DatasetOpenOptions open;
  long samples = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--cache_dir") open.cache_dir = argv[i + 1];
    else if (flag == "--dump") dump = argv[i + 1];
    else if (flag == "--samples") samples = std::stol(argv[i + 1]);
    else return std::cerr << "unknown flag " << flag << "\n", 2;
  }
  try {
    const auto t0 = std::chrono::steady_clock::now();
    llava::Dataset ds = llava::Dataset::open(data, "", open);
    const double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto t1 = std::chrono::steady_clock::now();
    long read = 0, bad = 0;
    for (long i = 0; i < samples && i < static_cast<long>(ds.size()); ++i, ++read) {
      try {
        ds.sample(static_cast<size_t>(i));
      } catch (const llava::Error&) {
        ++bad;
      }
    }
    const double read_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    if (!dump.empty()) {
      std::ofstream out(dump);
      for (size_t i = 0; i < ds.size(); ++i)
        out << ds.id(i) << '\t' << ds.modality_length(i) << '\t' << ds.image_count(i) << '\n';
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    std::printf("{\"samples\": %zu, \"seconds\": %.3f, \"read_samples\": %ld, \"bad_samples\": %ld, \"read_per_s\": %.1f, "
                "\"peak_rss_mib\": %.1f}\n",
                ds.size(), open_s, read, bad, read_s > 0 ? read / read_s : 0.0, ru.ru_maxrss / 1024.0);
  } catch (const llava::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
