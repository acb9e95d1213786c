#include "llava/cli.h"

#include <cstdio>

namespace llava::cli {
int run(int argc, char** argv) {
  std::fprintf(stderr, "llava-train: not implemented yet\n");
  return 1;
}
}  // namespace llava::cli
