// Open-addressing hash table from permutohedral lattice keys (D int32 coordinates; the
// (D+1)-th coordinate is implied because the coordinates of a lattice point sum to zero) to
// dense point indices 0, 1, 2, ... in order of first insertion.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace bl {

template <int D>
class KeyTable {
  public:
    explicit KeyTable(size_t expected = 256) { reset(expected); }

    // Empties the table, sized for `expected` keys (it grows as needed).
    void reset(size_t expected) {
        size_t cap = 64;
        while (cap < 2 * expected) cap <<= 1;
        slots_.assign(cap, kEmpty);
        mask_ = cap - 1;
        keys_.clear();
        keys_.reserve(expected * D);
    }

    size_t size() const { return keys_.size() / D; }
    const int32_t *key(size_t index) const { return keys_.data() + index * D; }

    // Index of `k`, or -1 if absent. Safe to call concurrently when nobody inserts.
    int32_t find(const int32_t *k) const {
        const uint64_t h = hash(k);
        const uint64_t tag = h >> 32 << 32;
        for (size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
            const uint64_t s = slots_[slot];
            if (s == kEmpty) return -1;
            if ((s & kTagMask) == tag && equal(key(s & kIndexMask), k))
                return static_cast<int32_t>(s & kIndexMask);
        }
    }

    // Index of `k`, inserting it with the next free index if absent.
    int32_t insert(const int32_t *k) {
        if (2 * (size() + 1) > slots_.size()) grow();
        const uint64_t h = hash(k);
        const uint64_t tag = h >> 32 << 32;
        for (size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
            const uint64_t s = slots_[slot];
            if (s == kEmpty) {
                const uint64_t index = size();
                keys_.insert(keys_.end(), k, k + D);
                slots_[slot] = tag | index;
                return static_cast<int32_t>(index);
            }
            if ((s & kTagMask) == tag && equal(key(s & kIndexMask), k))
                return static_cast<int32_t>(s & kIndexMask);
        }
    }

  private:
    // A slot holds the upper 32 bits of the key's hash (a cheap pre-check before comparing
    // keys) and the key's index in the lower 32 bits.
    static constexpr uint64_t kEmpty = ~uint64_t(0);
    static constexpr uint64_t kIndexMask = 0xFFFFFFFFULL;
    static constexpr uint64_t kTagMask = ~kIndexMask;

    static bool equal(const int32_t *a, const int32_t *b) {
        for (int i = 0; i < D; ++i)
            if (a[i] != b[i]) return false;
        return true;
    }

    static uint64_t hash(const int32_t *k) {
        uint64_t h = 0;
        for (int i = 0; i < D; ++i)
            h = (h + static_cast<uint32_t>(k[i])) * 0x9E3779B97F4A7C15ULL;
        return h ^ (h >> 29);
    }

    void grow() {
        std::vector<uint64_t> old;
        old.swap(slots_);
        slots_.assign(old.size() * 2, kEmpty);
        mask_ = slots_.size() - 1;
        for (uint64_t s : old) {
            if (s == kEmpty) continue;
            size_t slot = hash(key(s & kIndexMask)) & mask_;
            while (slots_[slot] != kEmpty) slot = (slot + 1) & mask_;
            slots_[slot] = s;
        }
    }

    std::vector<uint64_t> slots_;
    std::vector<int32_t> keys_;
    size_t mask_ = 0;
};

}  // namespace bl
