// Memory planner: places buffers with known lifetimes in one arena so that buffers
// alive at the same step never overlap (greedy by size, lowest fitting offset).
#pragma once

#include <cstdint>
#include <vector>

namespace voxinfer::graph {

struct BufferRequest {
  std::int64_t bytes = 0;
  int first = 0;  // step that writes it
  int last = 0;   // last step that reads it (inclusive)
};

struct ArenaPlan {
  std::vector<std::int64_t> offsets;  // one per request, multiples of the alignment
  std::int64_t total_bytes = 0;
};

ArenaPlan plan_arena(const std::vector<BufferRequest>& requests, std::int64_t alignment = 64);

}  // namespace voxinfer::graph
