#pragma once
// File-system helpers that must not go through std::filesystem::remove_all.
//
// Why: pip's LibTorch (seen with 2.11 on the lent H200 machine) exports its own copies of some
// std::filesystem functions from libtorch.so, and programs linked against it bind to them; that copy of
// remove_all calls a null pointer (a segfault the first time a checkpoint rotation or a temporary-folder
// cleanup runs). Everything in llava-train and its tests removes folders through remove_tree instead.
#include <cstdint>
#include <filesystem>
#include <system_error>

namespace llava {

// Removes `path` and everything below it (symbolic links are removed, never followed). A missing path is
// not an error. Returns the number of entries removed, like std::filesystem::remove_all.
// Throws std::filesystem::filesystem_error naming the entry that could not be removed.
std::uintmax_t remove_tree(const std::filesystem::path& path);
// The same, reporting failure in `ec` (and returning static_cast<uintmax_t>(-1)) instead of throwing.
std::uintmax_t remove_tree(const std::filesystem::path& path, std::error_code& ec) noexcept;

}  // namespace llava
