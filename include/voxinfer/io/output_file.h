// Output files that appear only when complete: checks on an output path before work
// starts, a refusal to overwrite an input, and whole-file writes through a temporary name.
// Temporaries are removed when the process is ended by SIGINT, SIGTERM or SIGHUP (where
// those signals have their default action), and SIGXFSZ is ignored so that a file-size
// limit is a write error, not a crash.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace voxinfer {

// Throws voxinfer::Error (io) when `path` cannot be an output file: it is a folder, its
// folder does not exist or is not writable.
void check_output_path(const std::string& path);

// True when both paths name the same existing file (hard links and symbolic links included).
bool same_file(const std::string& a, const std::string& b);

// Throws voxinfer::Error (invalid_input) when an output names the same file as one of the
// inputs. Empty paths are ignored.
void refuse_overwriting_inputs(const std::vector<std::string>& inputs, const std::vector<std::string>& outputs);

// Before any work is done: every non-empty output passes check_output_path and none names
// an input (so that a bad --stats folder is found before the label map is written).
void check_outputs(const std::vector<std::string>& inputs, const std::vector<std::string>& outputs);

// Writes `bytes` to `path` through a temporary file in the same folder, then renames it;
// every write, flush and close is checked, and nothing is left under either name on failure.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace voxinfer
