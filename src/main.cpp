#include "llava/cli.h"

int main(int argc, char** argv) { return llava::cli::run(argc, argv); }
