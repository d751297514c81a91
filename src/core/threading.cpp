// oneTBB backend of core/threading.h: one task arena sized by set_num_threads().
#include "voxinfer/core/threading.h"

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace voxinfer {
namespace {

int default_threads() {
  if (const char* env = std::getenv("VOXINFER_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

struct ArenaHolder {
  std::mutex mutex;
  int threads = 0;
  std::unique_ptr<tbb::task_arena> arena;

  tbb::task_arena& get() {
    std::lock_guard<std::mutex> lock(mutex);
    if (!arena) {
      if (threads <= 0) threads = default_threads();
      arena = std::make_unique<tbb::task_arena>(threads);
    }
    return *arena;
  }
};

ArenaHolder& holder() {
  static ArenaHolder h;
  return h;
}

}  // namespace

void set_num_threads(int n) {
  auto& h = holder();
  std::lock_guard<std::mutex> lock(h.mutex);
  const int want = n > 0 ? n : default_threads();
  if (want == h.threads && h.arena) return;
  h.threads = want;
  h.arena.reset();
}

int num_threads() {
  auto& h = holder();
  std::lock_guard<std::mutex> lock(h.mutex);
  if (h.threads <= 0) h.threads = default_threads();
  return h.threads;
}

void parallel_for(std::int64_t n, std::int64_t grain, const std::function<void(std::int64_t, std::int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t chunks = (n + grain - 1) / grain;
  if (chunks == 1 || num_threads() == 1) {
    for (std::int64_t c = 0; c < chunks; ++c) fn(c * grain, std::min(n, (c + 1) * grain));
    return;
  }
  holder().get().execute([&] {
    tbb::parallel_for(tbb::blocked_range<std::int64_t>(0, chunks, 1),
                      [&](const tbb::blocked_range<std::int64_t>& r) {
                        for (std::int64_t c = r.begin(); c < r.end(); ++c) fn(c * grain, std::min(n, (c + 1) * grain));
                      },
                      tbb::static_partitioner());
  });
}

void parallel_for_threads(std::int64_t n, const std::function<void(int, std::int64_t, std::int64_t)>& fn) {
  if (n <= 0) return;
  const int nthr = static_cast<int>(std::min<std::int64_t>(num_threads(), n));
  if (nthr == 1) {
    fn(0, 0, n);
    return;
  }
  holder().get().execute([&] {
    tbb::parallel_for(0, nthr, 1, [&](int ithr) {
      std::int64_t b = 0, e = 0;
      balance211(n, nthr, ithr, b, e);
      fn(ithr, b, e);
    }, tbb::static_partitioner());
  });
}

}  // namespace voxinfer
