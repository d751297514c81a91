// voxinfer batch's building blocks: case lists, sharding, manifests and resume, failure isolation.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>

#include "voxinfer/app/batch.h"
#include "voxinfer/core/error.h"

namespace voxinfer::app {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("voxinfer_batch_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(BatchCaseList, TextFileWithIdsCommentsAndRelativePathsIsSortedById) {
  const fs::path d = temp_dir("list");
  std::ofstream(d / "cases.txt")
      << "# cohort\n\nzeta\tscans/z.nii.gz\n/data/b.nii.gz\n  alpha\t/abs/a.nrrd  \nscans/ct_0000.nii.gz\n";
  const auto c = read_case_list(d / "cases.txt");
  ASSERT_EQ(c.size(), 4u);
  EXPECT_EQ(c[0].id, "alpha");
  EXPECT_EQ(c[0].input, "/abs/a.nrrd");
  EXPECT_EQ(c[1].id, "b");
  EXPECT_EQ(c[2].id, "ct_0000");  // no channel stripping unless asked
  EXPECT_EQ(c[2].input, (d / "scans/ct_0000.nii.gz").string());
  EXPECT_EQ(c[3].id, "zeta");
  fs::remove_all(d);
}

TEST(BatchCaseList, FolderWithNnunetChannelFilesListsOneCasePerStudy) {
  const fs::path d = temp_dir("folder");
  for (const char* f : {"p1_0000.nii.gz", "p1_0001.nii.gz", "p2_0000.nii.gz", "p2_0001.nii.gz", ".hidden"})
    std::ofstream(d / f) << "x";
  fs::create_directories(d / "dicom_series");
  const auto c = read_case_list(d, true);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].id, "dicom_series");
  EXPECT_EQ(c[1].id, "p1");
  EXPECT_EQ(c[1].input, (d / "p1_0000.nii.gz").string());
  EXPECT_EQ(c[2].id, "p2");
  EXPECT_EQ(read_case_list(d, false).size(), 5u);
  fs::remove_all(d);
}

TEST(BatchCaseList, DuplicateOrUnsafeIdsAndEmptyListsAreRefused) {
  const fs::path d = temp_dir("bad");
  std::ofstream(d / "dup.txt") << "a\tx.nii.gz\na\ty.nii.gz\n";
  std::ofstream(d / "unsafe.txt") << "../up\tx.nii.gz\n";
  std::ofstream(d / "empty.txt") << "# nothing\n";
  for (const char* f : {"dup.txt", "unsafe.txt", "empty.txt", "missing.txt"})
    EXPECT_THROW(read_case_list(d / f), Error) << f;
  fs::remove_all(d);
}

TEST(BatchShard, ExplicitAndSlurmAndKubernetesShards) {
  const auto none = [](const char*) -> const char* { return nullptr; };
  Shard s = parse_shard("2/5", std::nullopt, none);
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 5);
  std::map<std::string, std::string> env{
      {"SLURM_ARRAY_TASK_ID", "7"}, {"SLURM_ARRAY_TASK_MIN", "4"}, {"SLURM_ARRAY_TASK_MAX", "7"}};
  const auto from = [&](const char* k) -> const char* {
    auto it = env.find(k);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  s = parse_shard("auto", std::nullopt, from);
  EXPECT_EQ(s.index, 3);
  EXPECT_EQ(s.count, 4);
  env = {{"SLURM_ARRAY_TASK_ID", "1"}, {"SLURM_ARRAY_TASK_COUNT", "3"}};
  s = parse_shard("auto", std::nullopt, from);
  EXPECT_EQ(s.index, 1);
  EXPECT_EQ(s.count, 3);
  env = {{"JOB_COMPLETION_INDEX", "2"}};
  s = parse_shard("auto", 6, from);
  EXPECT_EQ(s.index, 2);
  EXPECT_EQ(s.count, 6);
  EXPECT_THROW(parse_shard("auto", std::nullopt, from), Error);  // Kubernetes needs the count
  EXPECT_THROW(parse_shard("auto", std::nullopt, none), Error);
  for (const char* bad : {"5/5", "1", "-1/3", "a/b", "0/0"})
    EXPECT_THROW(parse_shard(bad, std::nullopt, none), Error) << bad;
}

TEST(BatchShard, ShardsPartitionTheSortedList) {
  std::vector<BatchCase> cases;
  for (int i = 0; i < 11; ++i) cases.push_back(BatchCase{"c" + std::to_string(100 + i), "x"});
  std::map<std::string, int> seen;
  for (std::int64_t i = 0; i < 4; ++i)
    for (const auto& c : shard_cases(cases, Shard{i, 4})) ++seen[c.id];
  EXPECT_EQ(seen.size(), cases.size());
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id;
  EXPECT_EQ(shard_cases(cases, Shard{1, 4})[0].id, "c101");
  EXPECT_EQ(shard_cases(cases, Shard{1, 4})[1].id, "c105");
}

TEST(BatchManifest, SummaryKeepsTheLastLinePerCaseAndIgnoresACutLine) {
  const fs::path d = temp_dir("manifest");
  std::ofstream(d / "manifest-0-of-2.jsonl") << R"({"case":"a","status":"failed"})"
                                             << "\n"
                                             << R"({"case":"a","status":"done"})"
                                             << "\n"
                                             << R"({"case":"b","sta)";
  std::ofstream(d / "manifest-1-of-2.jsonl") << R"({"case":"b","status":"done"})"
                                             << "\n"
                                             << R"({"case":"c","status":"failed"})"
                                             << "\n"
                                             << R"({"case":"a","status":"skipped"})"
                                             << "\n";
  const auto counts = summarize_manifests(d);
  EXPECT_EQ(counts.at("done"), 2);
  EXPECT_EQ(counts.at("failed"), 1);
  EXPECT_EQ(counts.count("skipped"), 0u);
  EXPECT_TRUE(fs::exists(d / "manifest.jsonl"));
  fs::remove_all(d);
}

}  // namespace
}  // namespace voxinfer::app
