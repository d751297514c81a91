// voxinfer::Error: the one exception type of the public API, with a code the CLI maps to
// an exit status (DESIGN.md: 2 bad input, 3 bad model, 1 internal).
#pragma once

#include <stdexcept>
#include <string>

namespace voxinfer {

// invalid_input: bad usage, or an input voxinfer cannot read (a file, a pixel type, a codec);
// invalid_model and unsupported: a model (package, operator, feature) it cannot run.
enum class ErrorCode { invalid_input, invalid_model, unsupported, io, internal };

const char* error_code_name(ErrorCode code) noexcept;

class Error : public std::runtime_error {
 public:
  Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const noexcept { return code_; }

 private:
  ErrorCode code_;
};

// Exit status of the command line for an error code.
int exit_status(ErrorCode code) noexcept;

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw Error(code, message); }

}  // namespace voxinfer

// Checks a condition that depends on user input or a model; throws voxinfer::Error otherwise.
#define VOXINFER_CHECK(cond, code, msg)                         \
  do {                                                          \
    if (!(cond)) ::voxinfer::fail(::voxinfer::ErrorCode::code, (msg)); \
  } while (0)
