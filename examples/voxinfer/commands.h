// Subcommands of the voxinfer command line. Each add_* registers its options and the
// callback that runs it; errors are thrown as voxinfer::Error and mapped to exit
// statuses in main.cpp.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace voxinfer::cli {

// cmd_model.cpp: info (models; volumes via print_volume_info), run, bench.
void add_info_command(CLI::App& app);
void add_run_command(CLI::App& app);
void add_bench_command(CLI::App& app);

// cmd_segment.cpp: segment.
void add_segment_command(CLI::App& app);

// cmd_batch.cpp: batch.
void add_batch_command(CLI::App& app);

// cmd_serve.cpp: serve (a DICOM node).
void add_serve_command(CLI::App& app);

// cmd_classify.cpp: classify.
void add_classify_command(CLI::App& app);

// cmd_models.cpp: models (the packages under a folder, with their variants).
void add_models_command(CLI::App& app);

// cmd_volume.cpp: convert, and the volume side of `info`.
void add_convert_command(CLI::App& app);
void print_volume_info(const std::string& input, const std::string& series_uid, bool json);

// cli_util.cpp: writes a text file atomically (temporary name, then rename).
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace voxinfer::cli
