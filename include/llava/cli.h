#pragma once
// Entry point of the llava-train binary: subcommand dispatch, error -> exit code mapping.
namespace llava::cli {
int run(int argc, char** argv);
}
