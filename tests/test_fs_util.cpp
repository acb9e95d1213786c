// remove_tree: removes nested folders and files, removes symbolic links without following them, and treats
// a missing path as nothing to do.
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>

#include "llava/fs_util.h"
#include "test_support.h"

namespace fs = std::filesystem;

TEST(RemoveTree, RemovesNestedFoldersAndNeverFollowsLinks) {
  const fs::path root = llava::testing::temp_dir("remove_tree");
  const fs::path outside = llava::testing::temp_dir("remove_tree_outside");
  std::ofstream(outside / "keep.txt") << "must survive";
  fs::create_directories(root / "a" / "b" / "c");
  std::ofstream(root / "a" / "file1") << "x";
  std::ofstream(root / "a" / "b" / "c" / "file2") << "y";
  fs::create_directory_symlink(outside, root / "a" / "link_to_outside");
  // root, a, b, c, file1, file2, link
  EXPECT_EQ(llava::remove_tree(root), 7u);
  EXPECT_FALSE(fs::exists(fs::symlink_status(root)));
  EXPECT_TRUE(fs::exists(outside / "keep.txt"));  // the link went, its target stayed
  EXPECT_EQ(llava::remove_tree(outside), 2u);
}

TEST(RemoveTree, MissingPathIsNothingToDoAndAFileIsRemoved) {
  const fs::path root = llava::testing::temp_dir("remove_tree_file");
  EXPECT_EQ(llava::remove_tree(root / "does_not_exist"), 0u);
  std::ofstream(root / "single") << "z";
  EXPECT_EQ(llava::remove_tree(root / "single"), 1u);
  EXPECT_FALSE(fs::exists(root / "single"));
  std::error_code ec;
  EXPECT_EQ(llava::remove_tree(root, ec), 1u);
  EXPECT_FALSE(ec);
}

TEST(RemoveTree, FailureNamesThePath) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: a read-only folder does not stop root from removing";
  const fs::path root = llava::testing::temp_dir("remove_tree_ro");
  fs::create_directories(root / "locked");
  std::ofstream(root / "locked" / "f") << "w";
  fs::permissions(root / "locked", fs::perms::owner_read | fs::perms::owner_exec);
  try {
    llava::remove_tree(root);
    ADD_FAILURE() << "no error";
  } catch (const fs::filesystem_error& e) {
    EXPECT_NE(std::string(e.what()).find("locked"), std::string::npos) << e.what();
  }
  fs::permissions(root / "locked", fs::perms::owner_all);
  llava::remove_tree(root);
}
