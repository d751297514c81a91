// Greedy arena placement: largest buffers first, each at the lowest aligned offset that
// does not overlap a placed buffer whose lifetime intersects its own.
#include "voxinfer/graph/planner.h"

#include <algorithm>
#include <numeric>

namespace voxinfer::graph {

ArenaPlan plan_arena(const std::vector<BufferRequest>& req, std::int64_t alignment) {
  ArenaPlan plan;
  plan.offsets.assign(req.size(), 0);
  std::vector<std::size_t> order(req.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return req[a].bytes > req[b].bytes; });
  auto align = [&](std::int64_t x) { return (x + alignment - 1) / alignment * alignment; };
  std::vector<std::size_t> placed;
  for (const std::size_t i : order) {
    // Intervals taken by live-overlapping buffers, sorted by offset.
    std::vector<std::pair<std::int64_t, std::int64_t>> taken;
    for (const std::size_t j : placed)
      if (req[j].first <= req[i].last && req[i].first <= req[j].last)
        taken.emplace_back(plan.offsets[j], plan.offsets[j] + align(req[j].bytes));
    std::sort(taken.begin(), taken.end());
    std::int64_t off = 0;
    const std::int64_t need = align(req[i].bytes);
    for (const auto& [b, e] : taken) {
      if (off + need <= b) break;
      off = std::max(off, e);
    }
    plan.offsets[i] = off;
    plan.total_bytes = std::max(plan.total_bytes, off + need);
    placed.push_back(i);
  }
  return plan;
}

}  // namespace voxinfer::graph
