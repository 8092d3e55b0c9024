// Recycled memory for the large per-call arrays of the lattice and the dense CRF.
//
// A 512x512 dense CRF allocates about 20 MB per call (the bilateral lattice's simplices and
// weights, lattice values, normalisations). Fresh memory from the system costs a page fault
// and a zeroing per 4 KiB page, several milliseconds per call; a block handed back to this
// pool is reused by the next call instead. The pool keeps at most kMaxBlocks blocks and
// kMaxBytes bytes (larger or surplus blocks go back to the system) and only blocks of at
// least kMinBytes (smaller ones come from the ordinary allocator). clear() frees what it holds.
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

namespace bl {

class BufferPool {
  public:
    static constexpr size_t kMinBytes = size_t(64) << 10;
    static constexpr size_t kMaxBytes = size_t(64) << 20;
    static constexpr size_t kMaxBlocks = 32;
    static constexpr std::align_val_t kAlign{64};

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
                    ::operator delete(free_.front().second, kAlign);
                    free_.erase(free_.begin());
                }
                return;
            }
        }
        ::operator delete(block, kAlign);
    }

    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &entry : free_) ::operator delete(entry.second, kAlign);
        free_.clear();
        held_ = 0;
    }

    size_t held_bytes() {
        std::lock_guard<std::mutex> lock(mutex_);
        return held_;
    }

  private:
    BufferPool() : pid_(current_pid()) {}
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
