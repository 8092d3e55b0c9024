// Minimal fork-join parallelism on std::thread (no OpenMP runtime to link or to clash with
// the one bundled by torch). A parallel region spawns its threads, hands out tasks from a
// shared counter (dynamic load balance) and joins them.
#pragma once

#include <algorithm>
#include <atomic>
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

// Runs body(task) for every task in [0, tasks) on up to `threads` threads (the calling thread
// is one of them). Tasks are handed out one at a time from a shared counter, so a thread slowed
// down by other load on its core simply takes fewer tasks. An exception thrown by any task is
// rethrown on the calling thread after all threads joined.
template <class F>
void run_tasks(int64_t tasks, int threads, F &&body) {
    const int workers = static_cast<int>(std::min<int64_t>(std::max(threads, 1), tasks));
    if (workers <= 1) {
        for (int64_t t = 0; t < tasks; ++t) body(t);
        return;
    }
    std::atomic<int64_t> next{0};
    std::exception_ptr error;
    std::mutex error_mutex;
    auto work = [&]() {
        try {
            for (int64_t t = next++; t < tasks; t = next++) body(t);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex);
            if (!error) error = std::current_exception();
            next = tasks;  // stop handing out work
        }
    };
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(workers - 1));
    for (int w = 1; w < workers; ++w) pool.emplace_back(work);
    work();
    for (auto &t : pool) t.join();
    if (error) std::rethrow_exception(error);
}

// Runs body(begin, end, chunk) for `chunks` contiguous chunks of [0, n) on up to `threads`
// threads. Chunk bounds depend only on n and `chunks`, not on the number of threads.
template <class F>
void run_chunks(int64_t n, int chunks, int threads, F &&body) {
    run_tasks(chunks, threads, [&](int64_t c) {
        int64_t b, e;
        chunk_bounds(n, chunks, static_cast<int>(c), b, e);
        body(b, e, static_cast<int>(c));
    });
}

// Parallel loop over [0, n): body(begin, end) on contiguous chunks of at least `grain` items,
// about four chunks per thread for load balance.
template <class F>
void parallel_for(int64_t n, int threads, F &&body, int64_t grain = 4096) {
    if (threads <= 1 || n <= grain) {
        if (n > 0) body(int64_t(0), n);
        return;
    }
    const int chunks = chunk_count(n, 4 * threads, grain);
    run_chunks(n, chunks, threads, [&](int64_t b, int64_t e, int) { body(b, e); });
}

}  // namespace bl
