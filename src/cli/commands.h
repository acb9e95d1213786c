#pragma once
// One function per subcommand; each returns the process exit code (design.md §6).
#include "llava/options.h"

namespace llava {
struct LoadedLlava;     // llava/model/checkpoint.h
struct ExampleOptions;  // llava/example.h
}

namespace llava::cli {

int cmd_tokenize(const Options& o);
int cmd_preprocess(const Options& o);
int cmd_check_data(const Options& o);
int cmd_bench_data(const Options& o);
int cmd_demo_data(const Options& o);
int cmd_train(const Options& o);
int cmd_eval(const Options& o);
int cmd_generate(const Options& o);
int cmd_init_model(const Options& o);
int cmd_plan(const Options& o);

// The model of --model_name_or_path (+ --vision_tower, --pretrain_mm_mlp_adapter, --bf16, --device) for
// eval and generate, told the data side's image layout; notes go to stderr.
LoadedLlava load_model_from_options(const Options& o, const ExampleOptions& example);

}  // namespace llava::cli
