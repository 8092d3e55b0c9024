// Minimal fork-join parallelism on std::thread (no OpenMP runtime to link or to clash with the
// one bundled by torch).
//
// A parallel region hands out tasks from a shared counter to the calling thread and to workers
// of a persistent pool (created on first use, grown on demand). The caller never waits for a
// worker that has not started: it waits only for tasks some worker has already claimed. So a
// loaded machine, where a worker may not get a core for a while, costs no more than running the
// region on fewer threads, and a region costs no thread creation.
//
// Concurrent callers (Python threads, with the GIL released) do not share the pool: whoever
// finds it busy runs its region on its own thread. After fork() the child process builds a new
// pool (the parent's worker threads do not exist there).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#ifndef _WIN32
#include <unistd.h>
#endif

namespace bl {

// The process id: process-wide singletons (thread pool, kept CRF kernels, buffer pool) compare
// it to notice they were inherited through fork() and must be rebuilt in the child.
inline long current_pid() {
#ifdef _WIN32
    return 0;
#else
    return static_cast<long>(getpid());
#endif
}

// Number of hardware threads (at least 1).
inline int hardware_threads() {
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

// Number of chunks a region of n items is split into: at most `max_chunks`, and no chunk
// smaller than `grain` items.
inline int chunk_count(int64_t n, int max_chunks, int64_t grain) {
    if (max_chunks <= 1 || n <= grain) return 1;
    int64_t by_grain = (n + grain - 1) / grain;
    return static_cast<int>(std::min<int64_t>(max_chunks, by_grain));
}

// Bounds [begin, end) of chunk c out of `chunks` over n items.
inline void chunk_bounds(int64_t n, int chunks, int c, int64_t &begin, int64_t &end) {
    begin = n * c / chunks;
    end = n * (c + 1) / chunks;
}

class ThreadPool {
  public:
    // The process's pool (a new one after fork()).
    static ThreadPool &instance() {
        static std::mutex guard;
        static ThreadPool *pool = nullptr;  // never destroyed: workers may outlive main()
        std::lock_guard<std::mutex> lock(guard);
        if (pool == nullptr || pool->pid_ != current_pid()) pool = new ThreadPool();
        return *pool;
    }

    // Runs body(task) for task in [0, tasks) on the caller and up to threads - 1 workers.
    void run(int64_t tasks, int threads, const std::function<void(int64_t)> &body) {
        const int helpers = static_cast<int>(std::min<int64_t>(threads, tasks)) - 1;
        if (helpers <= 0 || in_task()) {  // nested regions run inline
            for (int64_t t = 0; t < tasks; ++t) body(t);
            return;
        }
        std::unique_lock<std::mutex> busy(dispatch_, std::try_to_lock);
        if (!busy.owns_lock()) {  // another caller is using the pool
            for (int64_t t = 0; t < tasks; ++t) body(t);
            return;
        }
        auto job = std::make_shared<Job>(body, tasks, helpers);
        {
            std::lock_guard<std::mutex> lock(mutex_);
            while (static_cast<int>(workers_.size()) < helpers)
                workers_.emplace_back([this] { work(); });
            job_ = job;
            ++epoch_;
        }
        wake_.notify_all();
        job->execute();
        while (job->done.load(std::memory_order_acquire) < job->claimed_total())
            std::this_thread::yield();
        {
            std::lock_guard<std::mutex> lock(mutex_);
            if (job_ == job) job_.reset();
        }
        if (job->error) std::rethrow_exception(job->error);
    }

  private:
    // Whether this thread is running a task of a region (then a nested region runs inline).
    static bool &in_task() {
        static thread_local bool flag = false;
        return flag;
    }

    struct Job {
        Job(const std::function<void(int64_t)> &f, int64_t n, int helpers)
            : body(f), tasks(n), seats(helpers) {}
        // Claims and runs tasks until none is left.
        void execute() {
            for (;;) {
                const int64_t t = next.fetch_add(1, std::memory_order_relaxed);
                if (t >= tasks) return;
                try {
                    if (!failed.load(std::memory_order_relaxed)) {
                        in_task() = true;
                        body(t);
                        in_task() = false;
                    }
                } catch (...) {
                    in_task() = false;
                    std::lock_guard<std::mutex> lock(error_mutex);
                    if (!error) error = std::current_exception();
                    failed = true;
                }
                done.fetch_add(1, std::memory_order_release);
            }
        }
        // Tasks claimed so far, capped at the total (the counter overshoots by one per thread).
        int64_t claimed_total() const {
            return std::min<int64_t>(next.load(std::memory_order_acquire), tasks);
        }
        const std::function<void(int64_t)> &body;
        const int64_t tasks;
        std::atomic<int> seats;  // helpers that may still join
        std::atomic<int64_t> next{0};
        std::atomic<int64_t> done{0};
        std::atomic<bool> failed{false};
        std::mutex error_mutex;
        std::exception_ptr error;
    };

    ThreadPool() : pid_(current_pid()) {}


    void work() {
        uint64_t seen = 0;
        for (;;) {
            std::shared_ptr<Job> job;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                wake_.wait(lock, [&] { return epoch_ != seen; });
                seen = epoch_;
                job = job_;
            }
            if (job && job->seats.fetch_sub(1) > 0) job->execute();
        }
    }

    const long pid_;
    std::mutex dispatch_;  // held by the one caller using the pool
    std::mutex mutex_;     // guards job_, epoch_ and workers_
    std::condition_variable wake_;
    std::shared_ptr<Job> job_;
    uint64_t epoch_ = 0;
    std::vector<std::thread> workers_;
};

// Runs body(task) for every task in [0, tasks) on up to `threads` threads (the calling thread
// is one of them). An exception thrown by a task is rethrown on the calling thread.
template <class F>
void run_tasks(int64_t tasks, int threads, F &&body) {
    if (tasks <= 0) return;
    if (threads <= 1 || tasks == 1) {
        for (int64_t t = 0; t < tasks; ++t) body(t);
        return;
    }
    const std::function<void(int64_t)> fn = [&body](int64_t t) { body(t); };
    ThreadPool::instance().run(tasks, threads, fn);
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
