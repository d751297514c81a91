// The one threading interface of voxinfer, over oneTBB (only threading.cpp sees TBB).
// Work is split into chunks that do not depend on the thread count, so results are
// bitwise identical for any number of threads.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace voxinfer {

// Threads used by parallel regions. 0 restores the default: VOXINFER_NUM_THREADS if set,
// else all hardware threads.
void set_num_threads(int n);
int num_threads();

// Runs fn(begin, end) over [0, n) in chunks of `grain` items (the last may be shorter).
// Chunks run concurrently in the task arena; the partition is fixed by n and grain alone.
void parallel_for(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& fn);

// Splits [0, n) into exactly num_threads() balanced ranges (oneDNN's balance211) and runs
// fn(thread_index, begin, end) once per range. For elementwise work only: never reduce
// across ranges with it, since the partition depends on the thread count.
void parallel_for_threads(std::int64_t n, const std::function<void(int, std::int64_t, std::int64_t)>& fn);

// Deterministic reduction: map over fixed chunks in parallel, then combine the partial
// results serially in chunk order.
template <typename T, typename Map, typename Combine>
T parallel_reduce(std::int64_t n, std::int64_t grain, T init, Map map, Combine combine) {
  if (n <= 0) return init;
  if (grain < 1) grain = 1;
  const std::int64_t chunks = (n + grain - 1) / grain;
  std::vector<T> partial(static_cast<std::size_t>(chunks), init);
  parallel_for(chunks, 1, [&](std::int64_t b, std::int64_t e) {
    for (std::int64_t c = b; c < e; ++c)
      partial[static_cast<std::size_t>(c)] = map(c * grain, std::min(n, (c + 1) * grain));
  });
  T acc = init;
  for (const T& p : partial) acc = combine(acc, p);
  return acc;
}

// balance211: the [begin, end) share of thread `ithr` of `nthr` over n items.
inline void balance211(std::int64_t n, int nthr, int ithr, std::int64_t& begin, std::int64_t& end) {
  const std::int64_t base = n / nthr, extra = n % nthr;
  begin = ithr * base + (ithr < extra ? ithr : extra);
  end = begin + base + (ithr < extra ? 1 : 0);
}

}  // namespace voxinfer
