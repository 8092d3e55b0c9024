// Recycled memory for the large per-call arrays of the lattice and the dense CRF.
//
// A 512x512 dense CRF allocates about 20 MB per call (the bilateral lattice's simplices and
// weights, lattice values, normalisations). Fresh memory from the system costs a page fault
// and a zeroing per 4 KiB page, several milliseconds per call; a block handed back to this
// pool is reused by the next call instead. The pool keeps at most kMaxBlocks blocks and
// kMaxBytes bytes (larger or surplus blocks go back to the system) and only blocks of at
// least kMinBytes (smaller ones come from the ordinary allocator). clear() frees what it holds.
//
// Blocks of at least kHugeBytes (the per-pixel arrays of a 512x512 lattice) are mapped
// directly, in whole 2 MiB huge pages where the system offers them (Linux transparent huge
// pages, madvise mode included): fresh memory then costs one page fault per 2 MiB instead of
// one per 4 KiB. A first call in a process (or after clear_cache()) touches about 25 MB of
// fresh memory at 512x512; its 6000 small page faults took about 5 ms of CPU time.
//
// Arrays from the pool are uninitialised, like new T[n].
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "parallel.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#define BL_HUGE_BLOCKS 1
#else
#define BL_HUGE_BLOCKS 0
#endif

namespace bl {

class BufferPool {
  public:
    static constexpr size_t kMinBytes = size_t(64) << 10;
    static constexpr size_t kMaxBytes = size_t(64) << 20;
    static constexpr size_t kMaxBlocks = 32;
    static constexpr std::align_val_t kAlign{64};
    static constexpr size_t kHugeBytes = size_t(2) << 20;  // also the huge page size

    // The process's pool (an empty one after fork()).
    static BufferPool &instance() {
        static std::mutex guard;
        static BufferPool *pool = nullptr;  // never destroyed: blocks may outlive main()
        std::lock_guard<std::mutex> lock(guard);
        if (pool == nullptr || pool->pid_ != current_pid()) pool = new BufferPool();
        return *pool;
    }

    // A block of at least `bytes` bytes; `capacity` receives its size.
    void *acquire(size_t bytes, size_t &capacity) {
        if (bytes >= kMinBytes) {
            std::lock_guard<std::mutex> lock(mutex_);
            // the smallest kept block that fits and wastes at most half of itself
            size_t pick = free_.size();
            for (size_t b = 0; b < free_.size(); ++b) {
                const size_t size = free_[b].first;
                if (size >= bytes && size / 2 <= bytes &&
                    (pick == free_.size() || size < free_[pick].first))
                    pick = b;
            }
            if (pick < free_.size()) {
                capacity = free_[pick].first;
                void *block = free_[pick].second;
                held_ -= capacity;
                free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(pick));
                return block;
            }
        }
        capacity = std::max<size_t>(bytes, 1);
        if (BL_HUGE_BLOCKS && capacity >= kHugeBytes) return map_huge(capacity);
        return ::operator new(capacity, kAlign);
    }

    // Hands a block from acquire() back.
    void release(void *block, size_t capacity) {
        if (block == nullptr) return;
        if (capacity >= kMinBytes) {
            std::lock_guard<std::mutex> lock(mutex_);
            if (capacity <= kMaxBytes) {
                free_.emplace_back(capacity, block);
                held_ += capacity;
                // over the limits: free the oldest blocks
                while (held_ > kMaxBytes || free_.size() > kMaxBlocks) {
                    held_ -= free_.front().first;
                    free_block(free_.front().second, free_.front().first);
                    free_.erase(free_.begin());
                }
                return;
            }
        }
        free_block(block, capacity);
    }

    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &entry : free_) free_block(entry.second, entry.first);
        free_.clear();
        held_ = 0;
    }

    size_t held_bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return held_;
    }

  private:
    BufferPool() : pid_(current_pid()) {}

    // A new block of `capacity` bytes (>= kHugeBytes; rounded up to whole huge pages), mapped
    // at a huge-page boundary and marked for huge pages (a hint: the kernel may still use small
    // pages). Freed by free_block(), which tells such blocks by their capacity.
    static void *map_huge(size_t &capacity) {
#if BL_HUGE_BLOCKS
        capacity = (capacity + kHugeBytes - 1) / kHugeBytes * kHugeBytes;
        const size_t span = capacity + kHugeBytes;  // room to align the start
        void *raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
        if (raw == MAP_FAILED) throw std::bad_alloc();
        const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
        const uintptr_t aligned = (start + kHugeBytes - 1) / kHugeBytes * kHugeBytes;
        if (aligned > start) munmap(raw, aligned - start);  // unmap the unaligned head
        const uintptr_t end = start + span, used_end = aligned + capacity;
        if (end > used_end) munmap(reinterpret_cast<void *>(used_end), end - used_end);
        void *block = reinterpret_cast<void *>(aligned);
        madvise(block, capacity, MADV_HUGEPAGE);
        return block;
#else
        return ::operator new(capacity, kAlign);
#endif
    }

    static void free_block(void *block, size_t capacity) {
#if BL_HUGE_BLOCKS
        if (capacity >= kHugeBytes) {
            munmap(block, capacity);
            return;
        }
#endif
        ::operator delete(block, kAlign);
    }
    const long pid_;
    std::mutex mutex_;
    std::vector<std::pair<size_t, void *>> free_;  // (capacity, block), oldest first
    size_t held_ = 0;
};

// An array of trivially copyable T whose storage comes from (and returns to) the BufferPool.
// resize() keeps nothing: the new elements are uninitialised.
template <class T>
class PoolArray {
  public:
    PoolArray() = default;
    explicit PoolArray(size_t n) { resize(n); }
    PoolArray(const PoolArray &) = delete;
    PoolArray &operator=(const PoolArray &) = delete;
    PoolArray(PoolArray &&other) noexcept { swap(other); }
    PoolArray &operator=(PoolArray &&other) noexcept {
        swap(other);
        return *this;
    }
    ~PoolArray() { BufferPool::instance().release(data_, capacity_); }

    void resize(size_t n) {
        if (n * sizeof(T) > capacity_) {
            BufferPool &pool = BufferPool::instance();
            pool.release(data_, capacity_);
            data_ = nullptr;
            capacity_ = 0;
            data_ = static_cast<T *>(pool.acquire(n * sizeof(T), capacity_));
        }
        size_ = n;
    }
    void swap(PoolArray &other) noexcept {
        std::swap(data_, other.data_);
        std::swap(size_, other.size_);
        std::swap(capacity_, other.capacity_);
    }

    T *data() { return data_; }
    const T *data() const { return data_; }
    size_t size() const { return size_; }
    T &operator[](size_t i) { return data_[i]; }
    const T &operator[](size_t i) const { return data_[i]; }
    T *begin() { return data_; }
    T *end() { return data_ + size_; }

  private:
    T *data_ = nullptr;
    size_t size_ = 0;
    size_t capacity_ = 0;  // bytes
};

template <class T>
void swap(PoolArray<T> &a, PoolArray<T> &b) noexcept {
    a.swap(b);
}

}  // namespace bl
