#include "voxinfer/core/error.h"

namespace voxinfer {

const char* error_code_name(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_input: return "invalid_input";
    case ErrorCode::invalid_model: return "invalid_model";
    case ErrorCode::unsupported: return "unsupported";
    case ErrorCode::io: return "io";
    case ErrorCode::internal: return "internal";
  }
  return "internal";
}

int exit_status(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_input: return 2;
    case ErrorCode::io: return 2;
    case ErrorCode::invalid_model: return 3;
    case ErrorCode::unsupported: return 3;
    case ErrorCode::internal: return 1;
  }
  return 1;
}

}  // namespace voxinfer
