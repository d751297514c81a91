// Batch segmentation of many studies with one loaded model: case lists, deterministic
// sharding (Slurm arrays, Kubernetes indexed Jobs), a manifest per shard, resume, failure
// isolation and a one-study look-ahead that reads the next study while the current one runs.
// docs/cluster.md describes the command line and a Slurm array job.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "voxinfer/app/segmenter.h"

namespace voxinfer::app {

struct BatchCase {
  std::string id;
  std::string input;  // a file or a DICOM folder (multi-channel nnU-Net: the _0000 file)
};

// A text file with one input per line ("case_id<TAB>path" or "path"; blank lines and lines
// starting with # are skipped; relative paths are relative to the file's folder), or a folder
// whose entries are the inputs (hidden entries skipped; with `skip_channel_files` nnU-Net's
// channel files _0001... are left to the _0000 file that names the case). The case id is the
// given one or the entry's name without its image extension (and without nnU-Net's _0000 when
// `skip_channel_files`). Sorted by id; duplicate ids are an error.
std::vector<BatchCase> read_case_list(const std::filesystem::path& list_or_folder, bool skip_channel_files = false);

struct Shard {
  std::int64_t index = 0, count = 1;
};
// "I/N", or "auto": SLURM_ARRAY_TASK_ID with SLURM_ARRAY_TASK_COUNT (or MIN/MAX), else
// JOB_COMPLETION_INDEX with `count_hint` (Kubernetes indexed Jobs). Error(invalid_input) otherwise.
Shard parse_shard(const std::string& spec, std::optional<std::int64_t> count_hint = std::nullopt,
                  const std::function<const char*(const char*)>& getenv = nullptr);
// The cases at positions p with p % count == index of the sorted list.
std::vector<BatchCase> shard_cases(const std::vector<BatchCase>& cases, const Shard& shard);

struct BatchOptions {
  std::filesystem::path output_dir;
  Shard shard;
  bool resume = false;
  bool stats = false, preview = false;
  bool lookahead = true;                        // read the next study while the current one runs
  std::string series;                           // DICOM SeriesInstanceUID (same for all cases), usually empty
  std::function<void(const std::string&)> log;  // one line per case
};

struct BatchSummary {
  std::int64_t done = 0, failed = 0, skipped = 0;
  double seconds = 0;
};

// Runs every case of `cases` (already sharded) with `segmenter`, writing OUT/<id>.nii.gz (and
// OUT/<id>_stats.json, OUT/<id>_preview.png when asked) and one manifest line per case to
// OUT/manifest-<index>-of-<count>.jsonl. A case that fails is recorded and the batch goes on.
BatchSummary run_batch(Segmenter& segmenter, const std::vector<BatchCase>& cases, const BatchOptions& options);

// Merges every manifest-*.jsonl of `output_dir` into manifest.jsonl (the last line per case
// wins) and returns the counts per status.
std::map<std::string, std::int64_t> summarize_manifests(const std::filesystem::path& output_dir);

}  // namespace voxinfer::app
