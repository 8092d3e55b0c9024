// Mean-field inference of a fully connected CRF over an RGB image with Potts compatibilities
// (Kraehenbuehl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
// Potentials", NIPS 2011), with the same conventions as their reference implementation:
//   - a Gaussian smoothness kernel over (x, y) / gauss_sxy and a bilateral appearance kernel
//     over (x, y) / bilateral_sxy and (r, g, b) / bilateral_srgb;
//   - each kernel symmetrically normalised, K~ = D^-1/2 K D^-1/2 with D = diag(K 1);
//   - Q <- softmax(-unary + sum_kernels weight * K~ Q), starting from Q = softmax(-unary).
//
// Both lattices are built once. The per-pixel work of an iteration then runs in one pass over
// the pixels, block by block and a few thousand pixels at a time: slice both kernels' blurred
// messages, update Q, and splat the new Q into both lattices for the next iteration. Each
// pixel's simplex (vertex indices and barycentric weights, 48 bytes per pixel for the
// bilateral lattice) is thus read once per iteration instead of twice per kernel, and the
// messages never leave the cache. The normalisations are computed the same way (three passes).
//
// Results do not depend on the number of threads: the splat blocks are a function of the pixel
// count (see Lattice::splat_blocks), each block splats its pixels in increasing order, and the
// slice and update are per pixel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "lattice.hpp"
#include "parallel.hpp"

namespace bl {

struct CrfParams {
    float gauss_sxy = 3.f;
    float gauss_weight = 3.f;
    float bilateral_sxy = 80.f;
    float bilateral_srgb = 13.f;
    float bilateral_weight = 10.f;
    int iterations = 10;
};

// exp(x) for x <= 0 (larger x are clamped to 88, smaller than -87 to -87: exp(-87) = 1.6e-38),
// within 2 ulp of the correctly rounded value, and exactly 1 at x = 0. Written without calls or
// branches so that loops over it vectorise (libm's expf is a call per value): Cephes' expf,
// exp(x) = 2^n exp(r) with n = round(x / ln 2) and a degree-7 polynomial for exp(r).
BL_INLINE_BODY float exp_approx(float x) {
    x = x < -87.f ? -87.f : x;  // (not std::min/max: calls the AVX2 build may not inline)
    x = x > 88.f ? 88.f : x;
    // n = round(x / ln 2): adding and subtracting 1.5 * 2^23 rounds to an integer (|x| < 2^22)
    const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;
    float r = x - n * 0.693359375f;  // ln 2 in two parts: r in [-ln 2 / 2, ln 2 / 2]
    r = r - n * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.f;
    const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

// The K = 2 case of softmax_range, in loops the compiler vectorises (one exp per pixel).
BL_INLINE_BODY void softmax2_pixel(float x0, float x1, float &q0, float &q1) {
    // The larger of x0, x1 gets exp(0) = 1 (exactly, also from exp_approx) and the other
    // exp(-|x0 - x1|): the same values as the general loop of softmax_range.
    const float e = exp_approx(x0 >= x1 ? x1 - x0 : x0 - x1);
    const float inv = 1.f / (1.f + e);
    const float small = e * inv;
    q0 = x0 >= x1 ? inv : small;
    q1 = x0 >= x1 ? small : inv;
}
BL_INLINE_BODY void softmax2_body(const float *unary, const float *msg, const float *total,
                                  float *q, int64_t n, int64_t lo, int64_t hi) {
    const float *u0 = unary + lo, *u1 = unary + n + lo;
    float *q0 = q + lo, *q1 = q + n + lo;
    const int64_t count = hi - lo;
    if (msg) {
        const float *t = total + lo;
        for (int64_t i = 0; i < count; ++i)
            softmax2_pixel(-u0[i] + msg[i], -u1[i] + (t[i] - msg[i]), q0[i], q1[i]);
    } else {
        for (int64_t i = 0; i < count; ++i) softmax2_pixel(-u0[i], -u1[i], q0[i], q1[i]);
    }
}
BL_TARGET_AVX2 inline void softmax2_avx2(const float *unary, const float *msg,
                                         const float *total, float *q, int64_t n, int64_t lo,
                                         int64_t hi) {
    softmax2_body(unary, msg, total, q, n, lo, hi);
}
inline void softmax2(const float *unary, const float *msg, const float *total, float *q,
                     int64_t n, int64_t lo, int64_t hi) {
    if (use_avx2())
        softmax2_avx2(unary, msg, total, q, n, lo, hi);
    else
        softmax2_body(unary, msg, total, q, n, lo, hi);
}

// q[k*n + i] for i in [lo, hi) <- softmax over k of (-unary[k*n + i] + m_k(i)). Without `msg`,
// m = 0. With it, m_k(i) = msg[k*msg_stride + i - lo] for k < K-1 and the last label's message
// is total[i] - sum_{k<K-1} m_k(i): Q sums to one, so K~ Q_last = K~ 1 - sum_{k<K-1} K~ Q_k.
template <int KC>
void softmax_range(const float *unary, const float *msg, int64_t msg_stride, const float *total,
                   float *q, int channels, int64_t n, int64_t lo, int64_t hi) {
    const int K = KC > 0 ? KC : channels;
    if (K == 2) {
        softmax2(unary, msg, total, q, n, lo, hi);
        return;
    }
    std::vector<float> x(static_cast<size_t>(K));
    for (int64_t i = lo; i < hi; ++i) {
        float top = -INFINITY, rest = msg ? total[i] : 0.f;
        for (int k = 0; k < K; ++k) {
            float m = 0.f;
            if (msg && k < K - 1) {
                m = msg[k * msg_stride + (i - lo)];
                rest -= m;
            } else if (msg) {
                m = rest;
            }
            x[k] = -unary[k * n + i] + m;
            top = std::max(top, x[k]);
        }
        float sum = 0.f;
        for (int k = 0; k < K; ++k) {
            x[k] = exp_approx(x[k] - top);
            sum += x[k];
        }
        const float inv = 1.f / sum;
        for (int k = 0; k < K; ++k) q[k * n + i] = x[k] * inv;
    }
}

// The Gaussian (smoothness) kernel depends only on the pixel grid, gauss_sxy and its weight,
// not on the image: its lattice, normalisation and its part of sum_kernels weight * K~ 1. The
// CRF refiner runs over many tiles of one size, so dense_crf keeps the most recent ones (at
// most kGridCacheEntries, together at most kGridCacheBytes: about 10 MB per 512x512 grid) and
// the next call on such a grid skips that work. A lattice's vertex numbering depends on the
// number of threads it was built with, but nothing computed from it does, so a kernel built
// by one call serves any other.
struct GridKernel {
    int64_t h = 0, w = 0;
    float sxy = 0.f, weight = 0.f;
    std::unique_ptr<Lattice<2>> lattice;
    std::vector<float> norm;   // D^-1/2: 1 / sqrt(K 1)
    std::vector<float> total;  // weight * K~ 1

    size_t bytes() const {
        return lattice->bytes() + (norm.size() + total.size()) * sizeof(float);
    }
    bool matches(int64_t h_, int64_t w_, float sxy_, float weight_) const {
        return h == h_ && w == w_ && sxy == sxy_ && weight == weight_;
    }
};

inline std::shared_ptr<const GridKernel> build_grid_kernel(int64_t h, int64_t w, float sxy,
                                                           float weight, int threads) {
    auto kernel = std::make_shared<GridKernel>();
    kernel->h = h;
    kernel->w = w;
    kernel->sxy = sxy;
    kernel->weight = weight;
    const int64_t n = h * w;
    const float inv = 1.f / sxy;
    const PixelGrid grid(w);
    const FeatureBounds<2> bounds = grid_bounds(h, w, inv);
    kernel->lattice = std::make_unique<Lattice<2>>(n, [&](int64_t i, float *f) {
        int64_t x, y;
        grid.xy(i, x, y);
        f[0] = static_cast<float>(x) * inv;
        f[1] = static_cast<float>(y) * inv;
    }, threads, &bounds);
    kernel->norm.assign(static_cast<size_t>(n), 1.f);
    kernel->lattice->filter(kernel->norm.data(), kernel->norm.data(), 1, threads);
    for (float &v : kernel->norm) v = 1.f / std::sqrt(v + 1e-20f);
    kernel->total.resize(static_cast<size_t>(n));
    const float *const kNoScale = nullptr;
    kernel->lattice->filter(kernel->norm.data(), kernel->total.data(), 1, threads, kNoScale,
                            kernel->norm.data(), weight, false);
    return kernel;
}

constexpr int kGridCacheEntries = 4;
constexpr size_t kGridCacheBytes = size_t(64) << 20;

class GridCache {
  public:
    // The process's cache (an empty one after fork()).
    static GridCache &instance() {
        static std::mutex guard;
        static GridCache *cache = nullptr;  // never destroyed, like the thread pool
        std::lock_guard<std::mutex> lock(guard);
        if (cache == nullptr || cache->pid_ != current_pid()) cache = new GridCache();
        return *cache;
    }

    // The kept kernel for this grid, or null.
    std::shared_ptr<const GridKernel> find(int64_t h, int64_t w, float sxy, float weight) {
        std::lock_guard<std::mutex> lock(mutex_);
        for (size_t e = 0; e < entries_.size(); ++e) {
            if (entries_[e]->matches(h, w, sxy, weight)) {
                auto hit = entries_[e];
                entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(e));
                entries_.insert(entries_.begin(), hit);  // most recent first
                return hit;
            }
        }
        return nullptr;
    }

    // Keeps a kernel built after find() returned null, and returns the kernel to use: the
    // one a concurrent call kept meanwhile for the same grid, if any, else `kernel`.
    std::shared_ptr<const GridKernel> keep(std::shared_ptr<const GridKernel> kernel) {
        if (kernel->bytes() > kGridCacheBytes) return kernel;
        std::lock_guard<std::mutex> lock(mutex_);
        for (const auto &entry : entries_)
            if (entry->matches(kernel->h, kernel->w, kernel->sxy, kernel->weight)) return entry;
        entries_.insert(entries_.begin(), kernel);
        size_t bytes = 0, keep = 0;
        while (keep < entries_.size() && keep < size_t(kGridCacheEntries) &&
               bytes + entries_[keep]->bytes() <= kGridCacheBytes)
            bytes += entries_[keep++]->bytes();
        entries_.resize(keep);
        return kernel;
    }

    void clear() {
        std::lock_guard<std::mutex> lock(mutex_);
        entries_.clear();
    }
    size_t size() {
        std::lock_guard<std::mutex> lock(mutex_);
        return entries_.size();
    }

  private:
    GridCache() : pid_(current_pid()) {}
    const long pid_;
    std::mutex mutex_;
    std::vector<std::shared_ptr<const GridKernel>> entries_;
};

// One kernel of a CRF call: its lattice and normalisation (borrowed from a GridKernel or
// owned), its weight, its precomputed part of the per-pixel total (null: computed by the
// passes), and two sets of lattice values (the blurred ones a pass slices, and the ones it
// splats into for the next pass).
template <int D>
struct CrfKernel {
    const Lattice<D> *lattice = nullptr;
    const float *norm = nullptr;
    const float *total = nullptr;
    float weight = 0.f;
    typename Lattice<D>::template Buffers<float> blurred, next;
    std::unique_ptr<Lattice<D>> owned_lattice;
    PoolArray<float> owned_norm;
    std::shared_ptr<const GridKernel> grid;  // keeps a cached kernel alive

    explicit operator bool() const { return lattice != nullptr; }

    // The splat into `next` is complete: sum its blocks, blur, and make it the sliced values;
    // then ready `next` for a splat of `channels` channels (none: leave it).
    template <int KC>
    void finish_splat(int channels, int threads) {
        lattice->template blur<float, KC>(next, threads);
        std::swap(blurred, next);
        if (channels > 0) lattice->clear(next, channels, threads);
    }
};

// Pixels per step of a pass: small enough that a step's messages, Q and simplices stay in
// the cache between the slice, the update and the splat.
constexpr int64_t kStep = 2048;

// Runs body(blk, lo, hi, scratch) over every splat block of `lattice`, kStep pixels at a time
// in increasing order, the blocks on up to `threads` threads; scratch: kStep * channels
// floats per block.
template <class Lat, class F>
void pixel_pass(const Lat &lattice, int channels, int threads, F &&body) {
    run_tasks(lattice.splat_blocks(), threads, [&](int64_t blk) {
        std::vector<float> scratch(static_cast<size_t>(kStep * std::max(channels, 1)));
        int64_t lo, hi;
        lattice.block_bounds(static_cast<int>(blk), lo, hi);
        for (int64_t s = lo; s < hi; s += kStep)
            body(static_cast<int>(blk), s, std::min(hi, s + kStep), scratch.data());
    });
}

// dense_crf with KC = K - 1 filtered channels known at compile time (0: any count).
template <int KC>
void dense_crf_passes(CrfKernel<2> &gauss, CrfKernel<5> &bilateral, const float *unary, int K,
                      int iterations, float *q, int64_t n, int threads) {
    constexpr int kLabels = KC > 0 ? KC + 1 : 0;  // softmax_range's compile-time K
    const int filtered = K - 1;  // channels splatted and sliced (see softmax_range)
    const float *const kNoScale = nullptr;
    const std::vector<float> ones(static_cast<size_t>(kStep), 1.f);
    PoolArray<float> total(static_cast<size_t>(n));
    auto each = [&](auto &&fn) {  // fn(kernel) for each kernel in use, Gaussian first
        if (gauss) fn(gauss);
        if (bilateral) fn(bilateral);
    };
    auto unprepared = [&](auto &&fn) {  // ... for each whose normalisation is still to come
        each([&](auto &kernel) {
            if (!kernel.total) fn(kernel);
        });
    };
    bool any_unprepared = false;
    unprepared([&](auto &) { any_unprepared = true; });
    auto pass = [&](int channels, auto &&body) {  // both lattices have the same blocks
        if (gauss)
            pixel_pass(*gauss.lattice, channels, threads, body);
        else
            pixel_pass(*bilateral.lattice, channels, threads, body);
    };

    if (any_unprepared) {
        // 1. K 1: splat ones.
        unprepared([&](auto &kernel) {
            kernel.owned_norm.resize(static_cast<size_t>(n));
            kernel.norm = kernel.owned_norm.data();
            kernel.lattice->clear(kernel.next, 1, threads);
        });
        pass(0, [&](int blk, int64_t lo, int64_t hi, float *) {
            unprepared([&](auto &kernel) {
                kernel.lattice->template splat<float, 1>(kernel.next, blk, lo, hi, ones.data(),
                                                         kStep, lo, kNoScale);
            });
        });
        // 2. norm = 1 / sqrt(K 1); splat the norms (K norm, sliced with post = norm, is K~ 1).
        unprepared([&](auto &kernel) { kernel.template finish_splat<1>(1, threads); });
        pass(0, [&](int blk, int64_t lo, int64_t hi, float *) {
            unprepared([&](auto &kernel) {
                float *norm = kernel.owned_norm.data();
                kernel.lattice->template slice<float, 1>(kernel.blurred, lo, hi, norm, n, 0,
                                                         kNoScale, 1.f, false);
                for (int64_t i = lo; i < hi; ++i) norm[i] = 1.f / std::sqrt(norm[i] + 1e-20f);
                kernel.lattice->template splat<float, 1>(kernel.next, blk, lo, hi, norm, n, 0,
                                                         kNoScale);
            });
        });
        unprepared([&](auto &kernel) { kernel.template finish_splat<1>(0, threads); });
    }
    // 3. total = sum_kernels weight * K~ 1; Q = softmax(-unary); splat Q.
    each([&](auto &kernel) { kernel.lattice->clear(kernel.next, filtered, threads); });
    pass(0, [&](int blk, int64_t lo, int64_t hi, float *) {
        bool accumulate = false;
        each([&](auto &kernel) {
            if (kernel.total) {  // precomputed: the same values the slice would give
                for (int64_t i = lo; i < hi; ++i)
                    total[i] = accumulate ? total[i] + kernel.total[i] : kernel.total[i];
            } else {
                kernel.lattice->template slice<float, 1>(kernel.blurred, lo, hi, total.data(), n,
                                                         0, kernel.norm, kernel.weight,
                                                         accumulate);
            }
            accumulate = true;
        });
        softmax_range<kLabels>(unary, nullptr, 0, nullptr, q, K, n, lo, hi);
        each([&](auto &kernel) {
            kernel.lattice->template splat<float, KC>(kernel.next, blk, lo, hi, q, n, 0,
                                                      kernel.norm);
        });
    });
    // 4. Each iteration: slice the messages sum_kernels weight * K~ Q, update Q, and (but in
    // the last) splat the new Q.
    for (int it = 0; it < iterations; ++it) {
        const bool last = it + 1 == iterations;
        each([&](auto &kernel) { kernel.template finish_splat<KC>(last ? 0 : filtered, threads); });
        pass(filtered, [&](int blk, int64_t lo, int64_t hi, float *msg) {
            bool accumulate = false;
            each([&](auto &kernel) {
                kernel.lattice->template slice<float, KC>(kernel.blurred, lo, hi, msg, kStep, lo,
                                                          kernel.norm, kernel.weight, accumulate);
                accumulate = true;
            });
            softmax_range<kLabels>(unary, msg, kStep, total.data(), q, K, n, lo, hi);
            if (!last)
                each([&](auto &kernel) {
                    kernel.lattice->template splat<float, KC>(kernel.next, blk, lo, hi, q, n, 0,
                                                              kernel.norm);
                });
        });
    }
}

// Runs mean-field inference; image is h x w x 3 (RGB), unary and q are K x (h*w).
inline void dense_crf(const uint8_t *image, int64_t h, int64_t w, const float *unary, int K,
                      const CrfParams &p, float *q, int threads) {
    const int64_t n = h * w;
    CrfKernel<2> gauss;
    CrfKernel<5> bilateral;
    const bool use_gauss = p.iterations > 0 && p.gauss_weight != 0.f;
    const bool use_bilateral = p.iterations > 0 && p.bilateral_weight != 0.f;
    auto build_bilateral = [&](int build_threads) {
        const float inv_xy = 1.f / p.bilateral_sxy, inv_rgb = 1.f / p.bilateral_srgb;
        const PixelGrid grid(w);
        bilateral.owned_lattice = std::make_unique<Lattice<5>>(n, [&](int64_t i, float *f) {
            const uint8_t *px = image + 3 * i;
            int64_t x, y;
            grid.xy(i, x, y);
            f[0] = static_cast<float>(x) * inv_xy;
            f[1] = static_cast<float>(y) * inv_xy;
            f[2] = px[0] * inv_rgb;
            f[3] = px[1] * inv_rgb;
            f[4] = px[2] * inv_rgb;
        }, build_threads);
    };
    GridCache &cache = GridCache::instance();
    if (use_gauss) gauss.grid = cache.find(h, w, p.gauss_sxy, p.gauss_weight);
    if (use_gauss && !gauss.grid && use_bilateral && threads == 2) {
        // A first call on this grid builds both kernels. On two threads each build runs on
        // a thread of its own, side by side (at 512x512 they cost about the same, 10-12 ms):
        // one synchronisation instead of a dozen parallel regions, and neither build has
        // chunk tables to merge. (With more threads, each build parallelised is faster:
        // nested regions run inline, so the side-by-side builds could not use them.)
        std::shared_ptr<const GridKernel> built;
        run_tasks(2, threads, [&](int64_t task) {
            if (task == 0)
                built = build_grid_kernel(h, w, p.gauss_sxy, p.gauss_weight, 1);
            else
                build_bilateral(1);
        });
        gauss.grid = cache.keep(std::move(built));
    } else {
        if (use_gauss && !gauss.grid)
            gauss.grid = cache.keep(
                build_grid_kernel(h, w, p.gauss_sxy, p.gauss_weight, threads));
        if (use_bilateral) build_bilateral(threads);
    }
    if (use_gauss) {
        gauss.lattice = gauss.grid->lattice.get();
        gauss.norm = gauss.grid->norm.data();
        gauss.total = gauss.grid->total.data();
        gauss.weight = p.gauss_weight;
    }
    if (use_bilateral) {
        bilateral.lattice = bilateral.owned_lattice.get();
        bilateral.weight = p.bilateral_weight;
    }
    if (!gauss && !bilateral) {  // no messages: Q stays softmax(-unary)
        dispatch_channels(K, [&](auto kc) {
            parallel_for(n, threads, [&](int64_t lo, int64_t hi) {
                softmax_range<decltype(kc)::value>(unary, nullptr, 0, nullptr, q, K, n, lo, hi);
            });
        });
        return;
    }
    dispatch_channels(K - 1, [&](auto kc) {
        dense_crf_passes<decltype(kc)::value>(gauss, bilateral, unary, K, p.iterations, q, n,
                                              threads);
    });
}

}  // namespace bl
