#pragma once
// Data mixtures as LLaVA-NeXT / OneVision write them (`--data_path mix.yaml`, LazySupervisedDataset):
//
//   datasets:
//     - json_path: llava_v1_5_mix665k.json     # .json (a list) or .jsonl (one sample per line)
//       sampling_strategy: "first:50%"         # all (default) | first:N% | end:N% | random:N% | first:N ...
//       image_folder: /data/coco               # ours: this entry's folder (default --image_folder)
//
// The data sets are concatenated in the order listed. As in LLaVA-NeXT, "first:N%" keeps the first
// ceil(N * n / 100) of the file's n samples, "end:N%" the last ones, "random:N%" the first ones of a shuffled
// copy, in the shuffled order; "first:N" (no %) keeps min(N, n). Differences, all deliberate: random draws
// with the run's --seed (a seeded Fisher-Yates shuffle per entry; LLaVA-NeXT's random.shuffle is unseeded,
// so ranks may disagree); N% may have decimals ("12.5%"); "end:0%" keeps nothing (Python's [-0:] keeps
// everything); a strategy, key or percentage LLaVA-NeXT would ignore or crash on is an error here.
// A relative json_path is looked up beside the YAML file first, then in the working directory (where
// LLaVA-NeXT opens it); a relative image_folder is used as given, like --image_folder.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace llava {

struct MixtureEntry {
  std::string json_path;     // the file that is read (resolved as above)
  std::string written_path;  // json_path as the YAML writes it
  std::string image_folder;  // empty: --image_folder
  std::string sampling_strategy = "all";
};

// Reads and checks mix.yaml: every entry's file exists, every strategy parses (percentages within
// 0-100). Throws llava::Error "mix.yaml: datasets[K] (json_path): reason".
std::vector<MixtureEntry> read_mixture(const std::string& yaml_path);

// The samples one entry takes from its file of `file_samples` samples, in order: [first, first + count)
// when `rows` is empty, else `rows` (random). entry_index and seed make random:N% reproducible.
struct RowSelection {
  uint64_t first = 0, count = 0;
  std::vector<uint32_t> rows;
};
RowSelection select_rows(const std::string& sampling_strategy, size_t file_samples, uint64_t seed,
                         size_t entry_index);

// Throws llava::Error "reason" when the strategy does not parse (what read_mixture reports per entry).
void check_sampling_strategy(const std::string& sampling_strategy);

}  // namespace llava
