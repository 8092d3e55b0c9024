// Minimal fork-join parallelism on std::thread (no OpenMP runtime to link or to clash with
// the one bundled by torch). Every parallel region splits [0, n) into at most `threads`
// contiguous chunks; chunk 0 runs on the calling thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace bl {

// Number of hardware threads (at least 1).
inline int hardware_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

// Number of chunks a region of n items is split into: at most `threads`, and no chunk
// smaller than `grain` items (spawning a thread costs tens of microseconds).
inline int chunk_count(int64_t n, int threads, int64_t grain) {
    if (threads <= 1 || n <= grain) return 1;
    int64_t by_grain = (n + grain - 1) / grain;
    return static_cast<int>(std::min<int64_t>(threads, by_grain));
}

// Bounds [begin, end) of chunk c out of `chunks` over n items.
inline void chunk_bounds(int64_t n, int chunks, int c, int64_t &begin, int64_t &end) {
    begin = n * c / chunks;
    end = n * (c + 1) / chunks;
}

// Runs body(begin, end, chunk) for `chunks` contiguous chunks of [0, n), concurrently.
// An exception thrown by any chunk is rethrown on the calling thread after all joined.
template <class F>
void run_chunks(int64_t n, int chunks, F &&body) {
    if (chunks <= 1) {
        body(int64_t(0), n, 0);
        return;
    }
    std::exception_ptr error;
    std::mutex error_mutex;
    auto guarded = [&](int c) {
        try {
            int64_t b, e;
            chunk_bounds(n, chunks, c, b, e);
            body(b, e, c);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(chunks - 1));
    for (int c = 1; c < chunks; ++c) pool.emplace_back(guarded, c);
    guarded(0);
    for (auto &t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

// Parallel loop over [0, n) in contiguous chunks: body(begin, end).
template <class F>
void parallel_for(int64_t n, int threads, F &&body, int64_t grain = 4096) {
    run_chunks(n, chunk_count(n, threads, grain),
               [&](int64_t b, int64_t e, int) { body(b, e); });
}

}  // namespace bl
