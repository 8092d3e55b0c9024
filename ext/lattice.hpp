// Permutohedral lattice for fast high-dimensional Gaussian filtering
// (Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice",
// Eurographics 2010), the filter behind the dense CRF of Kraehenbuehl & Koltun (2011).
//
// A Lattice<D> is built once per image from its D-dimensional features (already divided by
// their standard deviations). Construction embeds every pixel in the lattice, finds the D+1
// vertices of its enclosing simplex and their barycentric weights, numbers the lattice points
// with a hash table (a 2-D lattice over a pixel grid: a table indexed by the point's
// coordinates, see build_grid) and precomputes the blur neighbours. filter() then only
// splats, blurs and slices, so repeated filterings of one image (mean-field iterations) pay
// nothing for construction.
//
// filter() approximates   out_i = sum_j exp(-|f_i - f_j|^2 / 2) * in_j   (self term included):
// the lattice result is multiplied by scale() = sqrt(D+1) * (4*pi/3)^(D/2), the ratio between
// the unnormalised Gaussian and the lattice's per-point volume (see scale()).
//
// The blur applies F = B_0 B_1 .. B_D (kernel [1/4, 1/2, 1/4] along each of the D+1 lattice
// directions, as in Adams et al.) and, from the same splatted values, F^T = B_D .. B_0; the
// slice takes their mean. The filter S^T (F + F^T)/2 S is therefore an exactly symmetric
// matrix, so a loss s^T W s has the exact gradient 2 W s (one direction order alone is only
// approximately symmetric because missing lattice neighbours break commutativity).
//
// Results do not depend on the number of threads: the splat sums fixed pixel blocks in a fixed
// order, and the blur and slice are per-point / per-pixel computations.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "dispatch.hpp"
#include "hash_table.hpp"
#include "parallel.hpp"
#include "pool.hpp"

namespace bl {

// Calls body(std::integral_constant<int, K>) for small channel counts (fully unrolled inner
// loops) and body(std::integral_constant<int, 0>) for any other count.
template <class F>
void dispatch_channels(int channels, F &&body) {
    switch (channels) {
        case 1: body(std::integral_constant<int, 1>{}); break;
        case 2: body(std::integral_constant<int, 2>{}); break;
        case 3: body(std::integral_constant<int, 3>{}); break;
        case 4: body(std::integral_constant<int, 4>{}); break;
        default: body(std::integral_constant<int, 0>{}); break;
    }
}

// A per-thread accumulator of K channels: a fixed array when K is known at compile time.
template <class T, int KC>
struct Accumulator {
    T v[KC];
    T *data(int) { return v; }
};
template <class T>
struct Accumulator<T, 0> {
    std::vector<T> v;
    T *data(int k) {
        v.resize(static_cast<size_t>(k));
        return v.data();
    }
};

// Column and row of pixel i of a row-major grid w pixels wide, without an integer division
// per pixel (the lattice features of an image are computed for every pixel): (i + 0.5) / w in
// double precision is at least 0.5 / w away from the next integer, so truncating it gives the
// row unless w is in the millions; a compare on each side makes it exact for any w.
struct PixelGrid {
    explicit PixelGrid(int64_t width) : w(width), inv_w(1.0 / static_cast<double>(width)) {}
    void xy(int64_t i, int64_t &x, int64_t &y) const {
        y = static_cast<int64_t>((static_cast<double>(i) + 0.5) * inv_w);
        y -= y * w > i;
        y += (y + 1) * w <= i;
        x = i - y * w;
    }
    int64_t w;
    double inv_w;
};

// Bounds of every point's features, known before the build (the positions of a pixel grid).
// With them a 2-D lattice indexes its points directly instead of hashing them (see
// Lattice::build_grid).
template <int D>
struct FeatureBounds {
    float lo[D], hi[D];
};

// The bounds of the positions (x * inv, y * inv) of an h x w pixel grid (computed as there).
inline FeatureBounds<2> grid_bounds(int64_t h, int64_t w, float inv) {
    return {{0.f, 0.f},
            {static_cast<float>(w - 1) * inv, static_cast<float>(h - 1) * inv}};
}

/// The keys of a lattice point's two neighbours along blur axis ``j`` (0..D): the point plus and
/// minus the lattice vector of axis j, (D+1) e_j - 1 in the remainder-0 coordinates.
template <int D, class Key>
inline void neighbour_keys(const Key *key, int j, Key *n1, Key *n2) {
    for (int d = 0; d < D; ++d) {
        n1[d] = key[d] - 1;
        n2[d] = key[d] + 1;
    }
    if (j < D) {
        n1[j] = key[j] + D;
        n2[j] = key[j] - D;
    }
}

template <int D>
class Lattice {
  public:
    static constexpr int V = D + 1;  // vertices of a simplex

    // Builds the lattice of n points; feature(i, float *f) writes the D features of point i.
    // `bounds` (optional) holds every point's features; the result does not depend on it.
    template <class Feature>
    Lattice(int64_t n, Feature &&feature, int threads,
            const FeatureBounds<D> *bounds = nullptr)
        : n_(n) {
        if (n <= 0) throw std::invalid_argument("a lattice needs at least one point");
        if (n * V >= (int64_t(1) << 31))
            throw std::invalid_argument("too many pixels for one lattice (limit 2^31 / (D+1))");
        build(feature, threads, bounds);
    }

    int64_t num_pixels() const { return n_; }
    int64_t num_points() const { return m_; }
    // Memory held: per-pixel simplices and weights, blur neighbours.
    size_t bytes() const {
        return static_cast<size_t>(n_) * V * (sizeof(int32_t) + sizeof(float)) +
               nbr_.size() * sizeof(int32_t);
    }

    // Ratio between the unnormalised Gaussian exp(-|d|^2/2) and the lattice's mass-preserving
    // approximation of a convolution: the Gaussian integrates to (2*pi)^(D/2), and a lattice
    // point stands for the volume sqrt(D+1)^-1 * (3/2)^(D/2) of feature space (the lattice
    // (D+1)A*_D has volume (D+1)^(D-1/2) per point, and features are scaled by
    // (D+1)*sqrt(2/3) before elevation).
    static double scale() {
        const double pi = 3.14159265358979323846;
        return std::sqrt(double(V)) * std::pow(4.0 * pi / 3.0, D / 2.0);
    }

    // out[k*n + i] = (accumulate ? out[k*n + i] : 0)
    //                + alpha * post[i] * sum_j W_ij * pre[j] * in[k*n + j]
    // for `channels` channels stored channel-major. pre / post may be null (all ones).
    // in and out may alias.
    template <class T>
    void filter(const T *in, T *out, int channels, int threads, const T *pre = nullptr,
                const T *post = nullptr, T alpha = T(1), bool accumulate = false) const {
        if (channels <= 0) return;
        dispatch_channels(channels, [&](auto kc) {
            filter_impl<T, decltype(kc)::value>(in, out, channels, threads, pre, post, alpha,
                                                accumulate);
        });
    }

    // --- The three steps of filter(), for callers that interleave them with their own
    // per-pixel work (mean-field inference slices, updates and splats each block of pixels in
    // one pass). A Buffers<T> holds one filtering's lattice values; filter() is
    //   buffers.clear(); splat(every block); blur(buffers); slice(every pixel).

    // Lattice values of K channels: `sum` (rows() x K; block 0 splats into it and it holds
    // the blurred result), one buffer per further splat block, and blur scratch.
    template <class T>
    struct Buffers {
        int K = 0;
        PoolArray<T> sum, extra, scratch, transposed, transposed_scratch;  // pool.hpp
    };

    // Sizes `buf` for K channels and zeroes what the splat adds to.
    template <class T>
    void clear(Buffers<T> &buf, int K, int threads) const {
        const size_t size = static_cast<size_t>(m_ + 1) * static_cast<size_t>(K);
        buf.K = K;
        buf.sum.resize(size);
        buf.extra.resize(static_cast<size_t>(splat_blocks() - 1) * size);
        buf.scratch.resize(size);
        buf.transposed.resize(size);
        parallel_for(static_cast<int64_t>(size), threads, [&](int64_t lo, int64_t hi) {
            std::fill(buf.sum.begin() + lo, buf.sum.begin() + hi, T(0));
        }, 32768);
        // Each further block's buffer is read only where that block splats (blur()).
        run_tasks(splat_blocks() - 1, threads, [&](int64_t b) {
            T *extra = buf.extra.data() + b * size;
            std::fill(extra + block_lo_[b + 1] * K, extra + block_hi_[b + 1] * K, T(0));
        });
    }

    // Number of pixel blocks that splat into separate buffers, and block `blk`'s pixels
    // [lo, hi): a function of n only, so that results do not depend on the number of threads.
    int splat_blocks() const {
        return static_cast<int>(std::min<int64_t>(8, std::max<int64_t>(1, n_ / 32768)));
    }
    void block_bounds(int blk, int64_t &lo, int64_t &hi) const {
        chunk_bounds(n_, splat_blocks(), blk, lo, hi);
    }

    // Splat of pixels [lo, hi) of block `blk` (calls for one block must come in increasing
    // pixel order): adds pre[i] * value_k(i) to the vertices of pixel i's simplex, with
    // value_k(i) = in[k*in_stride + i - in_first] (in may be a window of the pixels, like
    // slice's out). pre may be null (all ones).
    template <class T, int KC = 0>
    void splat(Buffers<T> &buf, int blk, int64_t lo, int64_t hi, const T *in, int64_t in_stride,
               int64_t in_first, const T *pre) const {
        const int K = KC > 0 ? KC : buf.K;
        const size_t rows = static_cast<size_t>(m_ + 1);
        T *dst = blk == 0 ? buf.sum.data() : buf.extra.data() + (blk - 1) * rows * K;
        Accumulator<T, KC> store;
        T *v = store.data(K);
        for (int64_t i = lo; i < hi; ++i) {
            const T scale_i = pre ? pre[i] : T(1);
            for (int k = 0; k < K; ++k) v[k] = scale_i * in[k * in_stride + (i - in_first)];
            const int32_t *off = &offset_[static_cast<size_t>(i * V)];
            const float *w = &weight_[static_cast<size_t>(i * V)];
            for (int r = 0; r <= D; ++r) {
                T *row = dst + static_cast<int64_t>(off[r]) * K;
                const T wr = static_cast<T>(w[r]);
                for (int k = 0; k < K; ++k) row[k] += wr * v[k];
            }
        }
    }

    // After every block's splat: sums the block buffers in block order and blurs, leaving
    // (F + F^T) of the splatted values in buf.sum (see the file comment).
    template <class T, int KC = 0>
    void blur(Buffers<T> &buf, int threads) const {
        const int K = KC > 0 ? KC : buf.K;
        const int blocks = splat_blocks();
        const size_t rows = static_cast<size_t>(m_ + 1);
        PoolArray<T> &a = buf.sum, &b = buf.scratch, &c = buf.transposed;
        if (blocks > 1) {  // add each block's buffer, in block order, where it splatted
            parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
                for (int64_t blk = 1; blk < blocks; ++blk) {
                    const T *src = buf.extra.data() + (blk - 1) * rows * K;
                    const int64_t from = std::max<int64_t>(lo, block_lo_[blk]) * K;
                    const int64_t to = std::min<int64_t>(hi, block_hi_[blk]) * K;
                    for (int64_t q = from; q < to; ++q) a[static_cast<size_t>(q)] += src[q];
                }
            }, 8192);
        }
        // Blur with F = B_0 B_1 .. B_D (kernel [1/4, 1/2, 1/4] along each lattice direction)
        // and with its transpose F^T = B_D .. B_0, from the same splatted values; the slice
        // takes their mean, so the filter S^T (F + F^T) / 2 S is an exactly symmetric matrix.
        // Row m_ (a missing neighbour) must read as zero: never written by the passes, zeroed
        // by clear() in `sum`, copied into `transposed`, and zeroed here in the scratches.
        std::copy(a.begin(), a.end(), c.begin());
        buf.transposed_scratch.resize(a.size());
        PoolArray<T> &d = buf.transposed_scratch;
        for (int k = 0; k < K; ++k) {
            b[static_cast<size_t>(m_) * K + k] = T(0);
            d[static_cast<size_t>(m_) * K + k] = T(0);
        }
        auto blur_pass = [&](const T *src, T *dst, int j, int64_t lo, int64_t hi) {
            const int32_t *nb = &nbr_[static_cast<size_t>(j * m_ * 2)];
            for (int64_t p = lo; p < hi; ++p) {
                const T *mid = src + p * K;
                const T *x = src + static_cast<int64_t>(nb[2 * p]) * K;
                const T *y = src + static_cast<int64_t>(nb[2 * p + 1]) * K;
                T *o = dst + p * K;
                for (int k = 0; k < K; ++k) o[k] = T(0.5) * mid[k] + T(0.25) * (x[k] + y[k]);
            }
        };
        auto forward = [&](int64_t lo, int64_t hi, int j) {
            blur_pass(a.data(), b.data(), j, lo, hi);
        };
        auto backward = [&](int64_t lo, int64_t hi, int j) {
            blur_pass(c.data(), d.data(), j, lo, hi);
        };
        if (threads >= 3 && m_ >= 65536) {  // many points: every pass in parallel
            for (int j = 0; j <= D; ++j) {
                parallel_for(m_, threads, [&](int64_t lo, int64_t hi) { forward(lo, hi, j); },
                             8192);
                a.swap(b);
            }
            for (int j = D; j >= 0; --j) {
                parallel_for(m_, threads, [&](int64_t lo, int64_t hi) { backward(lo, hi, j); },
                             8192);
                c.swap(d);
            }
        } else {  // the two chains side by side (one parallel region instead of 2(D+1))
            run_tasks(2, threads, [&](int64_t chain) {
                if (chain == 0) {
                    for (int j = 0; j <= D; ++j) {
                        forward(0, m_, j);
                        a.swap(b);
                    }
                } else {
                    for (int j = D; j >= 0; --j) {
                        backward(0, m_, j);
                        c.swap(d);
                    }
                }
            });
        }
        parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
            for (int64_t q = lo * K; q < hi * K; ++q) a[static_cast<size_t>(q)] += c[q];
        }, 8192);
    }

    // Slice of pixels [lo, hi) from blurred buffers:
    // out[k*n + i] = (accumulate ? out[k*n + i] : 0) + gain(alpha) * post[i] * value_k(i),
    // value_k(i) interpolated from the vertices of pixel i's simplex. `out` may be a window:
    // out_stride is its channel stride and out_first the pixel at out[0].
    template <class T, int KC = 0>
    void slice(const Buffers<T> &buf, int64_t lo, int64_t hi, T *out, int64_t out_stride,
               int64_t out_first, const T *post, T alpha, bool accumulate) const {
        const int K = KC > 0 ? KC : buf.K;
        const T gain = alpha * static_cast<T>(0.5 * scale());
        const T *lat = buf.sum.data();
        Accumulator<T, KC> store;
        T *acc = store.data(K);
        for (int64_t i = lo; i < hi; ++i) {
            for (int k = 0; k < K; ++k) acc[k] = T(0);
            const int32_t *off = &offset_[static_cast<size_t>(i * V)];
            const float *w = &weight_[static_cast<size_t>(i * V)];
            for (int r = 0; r <= D; ++r) {
                const T *v = lat + static_cast<int64_t>(off[r]) * K;
                const T wr = static_cast<T>(w[r]);
                for (int k = 0; k < K; ++k) acc[k] += wr * v[k];
            }
            const T g = post ? gain * post[i] : gain;
            for (int k = 0; k < K; ++k) {
                T &o = out[k * out_stride + (i - out_first)];
                o = accumulate ? o + g * acc[k] : g * acc[k];
            }
        }
    }

  private:
    // Embeds feature vector f: writes the remainder-0 point rem0 and the ranks that identify
    // the enclosing simplex, and the barycentric weights of its D+1 vertices.
    static void embed(const float *f, const double *scale, int32_t *rem0, int32_t *rank,
                      float *bary) {
        double elevated[V], delta[V];
        double sum_cf = 0;
        for (int j = D; j > 0; --j) {
            const double cf = f[j - 1] * scale[j - 1];
            elevated[j] = sum_cf - j * cf;
            sum_cf += cf;
        }
        elevated[0] = sum_cf;

        // Nearest remainder-0 point: round each coordinate to a multiple of D+1 (by truncation,
        // an inline instruction; floor/ceil/lrint are library calls on baseline x86-64).
        int sum = 0;
        for (int i = 0; i <= D; ++i) {
            const double v = elevated[i] * (1.0 / V);
            const int32_t q = static_cast<int32_t>(v + (v >= 0 ? 0.5 : -0.5));
            rem0[i] = q * V;
            delta[i] = elevated[i] - rem0[i];
            sum += q;
            rank[i] = 0;
        }
        // Rank of each coordinate's offset (branch-free: the comparisons are data-dependent).
        for (int i = 0; i < D; ++i) {
            for (int j = i + 1; j <= D; ++j) {
                const int less = delta[i] < delta[j];
                rank[i] += less;
                rank[j] += 1 - less;
            }
        }
        // Bring the point back onto the plane sum(x) = 0 if rounding moved it off.
        for (int i = 0; i <= D; ++i) {
            rank[i] += sum;
            const int shift = (rank[i] < 0) - (rank[i] > D);
            rank[i] += shift * V;
            rem0[i] += shift * V;
            delta[i] -= shift * V;
        }
        double b[V + 1] = {};
        for (int i = 0; i <= D; ++i) {
            const double v = delta[i] * (1.0 / V);
            b[D - rank[i]] += v;
            b[D - rank[i] + 1] -= v;
        }
        b[0] += 1.0 + b[V];
        for (int r = 0; r <= D; ++r) bary[r] = static_cast<float>(b[r]);
    }

    // embed() for up to kBatch points at once, with the points in the inner loops so that the
    // compiler vectorises them (the same double operations in the same order: bit-identical
    // results). f[d * kBatch + p] is feature d of point p; outputs are per point, V values
    // each: rem0[p*V + i], rank[p*V + i], bary[p*V + r]. Features must be finite and below 1e6
    // in magnitude (the caller replaces others).
    static constexpr int kBatch = 64;
    static void embed_batch(const float *f, const double *scale, int32_t *rem0_out,
                            int32_t *rank_out, int32_t *mask_out, float *bary_out) {
        if (use_avx2())
            embed_batch_avx2(f, scale, rem0_out, rank_out, mask_out, bary_out);
        else
            embed_batch_body(f, scale, rem0_out, rank_out, mask_out, bary_out);
    }
    BL_TARGET_AVX2 static void embed_batch_avx2(const float *f, const double *scale,
                                                int32_t *rem0_out, int32_t *rank_out,
                                                int32_t *mask_out, float *bary_out) {
        embed_batch_body(f, scale, rem0_out, rank_out, mask_out, bary_out);
    }
    static BL_INLINE_BODY void embed_batch_body(const float *f, const double *scale,
                                                int32_t *rem0_out, int32_t *rank_out,
                                                int32_t *mask_out, float *bary_out) {
        constexpr int B = kBatch;
        alignas(64) double elevated[V][B], delta[V][B], rank[V][B], rem0[V][B], sum[B];
        for (int p = 0; p < B; ++p) sum[p] = 0;  // sum_cf of embed()
        for (int j = D; j > 0; --j) {
            for (int p = 0; p < B; ++p) {
                const double cf = f[(j - 1) * B + p] * scale[j - 1];
                elevated[j][p] = sum[p] - j * cf;
                sum[p] += cf;
            }
        }
        for (int p = 0; p < B; ++p) {
            elevated[0][p] = sum[p];
            sum[p] = 0;  // now the sum of the rounded coordinates (small integers: exact)
        }
        for (int i = 0; i <= D; ++i) {
            for (int p = 0; p < B; ++p) {
                const double v = elevated[i][p] * (1.0 / V);
                const double q =
                    static_cast<double>(static_cast<int32_t>(v + (v >= 0 ? 0.5 : -0.5)));
                rem0[i][p] = q * V;
                delta[i][p] = elevated[i][p] - rem0[i][p];
                sum[p] += q;
                rank[i][p] = 0;
            }
        }
        for (int i = 0; i < D; ++i) {
            for (int j = i + 1; j <= D; ++j) {
                for (int p = 0; p < B; ++p) {
                    const double less = delta[i][p] < delta[j][p] ? 1.0 : 0.0;
                    rank[i][p] += less;
                    rank[j][p] += 1.0 - less;
                }
            }
        }
        for (int i = 0; i <= D; ++i) {
            for (int p = 0; p < B; ++p) {
                const double r = rank[i][p] + sum[p];
                const double shift = (r < 0 ? 1.0 : 0.0) - (r > D ? 1.0 : 0.0);
                rank[i][p] = r + shift * V;
                rem0[i][p] += shift * V;
                delta[i][p] -= shift * V;
            }
        }
        // Barycentric weights: embed() adds v_i = delta_i / V to b[D - rank_i] and subtracts
        // it from b[D - rank_i + 1]. Every b[r] thus gets one term of each sign, and their sum
        // does not depend on the order: b[r] = v(rank D-r) - v(rank D-r+1) for 0 < r <= D,
        // and b[0] = v(rank D) + (1 + (0 - v(rank 0))).
        alignas(64) double by_rank[V][B];
        for (int k = 0; k <= D; ++k) {
            for (int p = 0; p < B; ++p) {
                double v = 0;
                for (int i = 0; i <= D; ++i) v = rank[i][p] == k ? delta[i][p] * (1.0 / V) : v;
                by_rank[k][p] = v;
            }
        }
        // Vertex r's mask (see build()): the coordinates ranked above D - r, as a sum of
        // distinct powers of two (exact).
        alignas(64) double masks[V][B];
        for (int r = 0; r <= D; ++r) {
            for (int p = 0; p < B; ++p) {
                double bits = 0;
                for (int i = 0; i <= D; ++i) bits += rank[i][p] > D - r ? double(1 << i) : 0.0;
                masks[r][p] = bits;
            }
        }
        for (int p = 0; p < B; ++p) {
            for (int i = 0; i <= D; ++i) {
                rem0_out[p * V + i] = static_cast<int32_t>(rem0[i][p]);
                rank_out[p * V + i] = static_cast<int32_t>(rank[i][p]);
                mask_out[p * V + i] = static_cast<int32_t>(masks[i][p]);
            }
            bary_out[p * V] =
                static_cast<float>(by_rank[D][p] + (1.0 + (0.0 - by_rank[0][p])));
            for (int r = 1; r <= D; ++r)
                bary_out[p * V + r] =
                    static_cast<float>(by_rank[D - r][p] - by_rank[D - r + 1][p]);
        }
    }

    // Features of points [start, start + count) into f[d * kBatch + p], for embed_batch:
    // zeros past `count` and for a point whose features are not finite or not below 1e6 in
    // magnitude (ok[p] false, and `bad` set for the caller to report).
    template <class Feature>
    static void load_batch(Feature &feature, int64_t start, int count, float *batch_f,
                           bool *ok, std::atomic<bool> &bad) {
        float f[D] = {};
        for (int p = 0; p < kBatch; ++p) {
            if (p < count) feature(start + p, f);
            bool finite = p < count;
            for (int d = 0; d < D; ++d) finite &= std::fabs(f[d]) < 1e6f;  // NaN: false
            ok[p] = finite;
            if (p < count && !finite) bad = true;
            for (int d = 0; d < D; ++d) batch_f[d * kBatch + p] = finite ? f[d] : 0.f;
        }
    }
    [[noreturn]] static void throw_bad_features() {
        throw std::invalid_argument(
            "lattice features must be finite and below 1e6 in magnitude "
            "(is a sigma tiny or not finite?)");
    }

    template <class Feature>
    void build(Feature &feature, int threads, const FeatureBounds<D> *bounds) {
        // Left uninitialised (every entry is written below, in parallel: first touch).
        offset_.resize(static_cast<size_t>(n_ * V));
        weight_.resize(static_cast<size_t>(n_ * V));
        double scale[D];
        const double inv_std = V * std::sqrt(2.0 / 3.0);
        for (int i = 0; i < D; ++i) scale[i] = inv_std / std::sqrt((i + 1.0) * (i + 2.0));
        if constexpr (D == 2) {
            if (bounds != nullptr && build_grid(feature, scale, *bounds, threads)) return;
        }
        build_hashed(feature, scale, threads);
    }

    // The general build: hashes the lattice points.
    template <class Feature>
    void build_hashed(Feature &feature, const double *scale, int threads) {
        // 1. Embed pixels; each chunk numbers its vertices in a private table. (The numbering
        // depends on the chunking, the filter's results do not.)
        //
        // Vertex r of a pixel's simplex is rem0 + (r on the coordinates ranked <= D-r, r-V on
        // the r others), so it is fixed by rem0 and the set of coordinates ranked above D-r: a
        // bit mask. Each chunk numbers the remainder-0 points it meets (usually far fewer than
        // the vertices) and keeps, per remainder-0 point, the vertex index of each of the 2^V
        // masks once looked up. A pixel then costs at most one hash lookup (its rem0, none when
        // it equals the previous pixel's) instead of D+1, and vertices are still inserted in
        // order of first use, so the numbering is the one of D+1 lookups per pixel.
        constexpr int kMasks = 1 << V;
        const int chunks = chunk_count(n_, threads > 1 ? 4 * threads : 1, 16384);
        std::vector<KeyTable<D>> tables(static_cast<size_t>(chunks));
        std::atomic<bool> bad{false};
        run_chunks(n_, chunks, threads, [&](int64_t lo, int64_t hi, int c) {
            KeyTable<D> &table = tables[static_cast<size_t>(c)];
            table.reset(1024);
            KeyTable<D> centres(256);     // remainder-0 points met by this chunk
            std::vector<int32_t> around;  // kMasks vertex indices per centre, -1: not yet
            alignas(64) float batch_f[D * kBatch], batch_bary[V * kBatch];
            int32_t batch_rem0[V * kBatch], batch_rank[V * kBatch], batch_mask[V * kBatch];
            bool batch_ok[kBatch];
            int32_t prev_rem0[D], key[D];
            int32_t *known = nullptr;     // `around` row of the current centre
            for (int64_t start = lo; start < hi; start += kBatch) {
                const int count = static_cast<int>(std::min<int64_t>(kBatch, hi - start));
                load_batch(feature, start, count, batch_f, batch_ok, bad);  // reported below
                embed_batch(batch_f, scale, batch_rem0, batch_rank, batch_mask, batch_bary);
                for (int p = 0; p < count; ++p) {
                    const int64_t i = start + p;
                    int32_t *off = &offset_[static_cast<size_t>(i * V)];
                    float *wt = &weight_[static_cast<size_t>(i * V)];
                    if (!batch_ok[p]) {  // never used: the build fails
                        for (int r = 0; r <= D; ++r) {
                            off[r] = 0;
                            wt[r] = 0.f;
                        }
                        continue;
                    }
                    const int32_t *rem0 = &batch_rem0[p * V], *rank = &batch_rank[p * V];
                    bool same = known != nullptr;
                    for (int d = 0; same && d < D; ++d) same = rem0[d] == prev_rem0[d];
                    if (!same) {  // a new centre (rem0[D] follows: the coordinates sum to 0)
                        const size_t count_before = centres.size();
                        const size_t centre = static_cast<size_t>(centres.insert(rem0));
                        if (centre == count_before)
                            around.resize((count_before + 1) * kMasks, -1);
                        known = &around[centre * kMasks];
                        for (int d = 0; d < D; ++d) prev_rem0[d] = rem0[d];
                    }
                    const int32_t *masks = &batch_mask[p * V];
                    for (int r = 0; r <= D; ++r) {
                        int32_t &vertex = known[masks[r]];
                        if (vertex < 0) {
                            for (int d = 0; d < D; ++d)
                                key[d] = rem0[d] + (rank[d] <= D - r ? r : r - V);
                            vertex = table.insert(key);
                        }
                        off[r] = vertex;
                    }
                    for (int r = 0; r <= D; ++r) wt[r] = batch_bary[p * V + r];
                }
            }
        });
        if (bad) throw_bad_features();

        // 2. Merge the private tables into one numbering, in chunk order.
        KeyTable<D> table = std::move(tables[0]);
        if (chunks > 1) {
            std::vector<std::vector<int32_t>> remap(static_cast<size_t>(chunks));
            for (int c = 1; c < chunks; ++c) {
                KeyTable<D> &local = tables[static_cast<size_t>(c)];
                remap[c].resize(local.size());
                for (size_t l = 0; l < local.size(); ++l) remap[c][l] = table.insert(local.key(l));
                local = KeyTable<D>(1);
            }
            run_chunks(n_, chunks, threads, [&](int64_t lo, int64_t hi, int c) {
                if (c == 0) return;
                const std::vector<int32_t> &map = remap[static_cast<size_t>(c)];
                for (int64_t e = lo * V; e < hi * V; ++e)
                    offset_[static_cast<size_t>(e)] = map[static_cast<size_t>(offset_[e])];
            });
        }
        m_ = static_cast<int64_t>(table.size());

        // The lattice points each splat block reaches: [block_lo_, block_hi_). Vertices are
        // numbered in order of first use, so on a pixel grid a block of rows reaches about
        // 1/blocks of them and clear() / blur() skip the rest of its buffer (adding zeros
        // changes nothing). Small lattices (every block reaches almost all points) skip this.
        const int blocks = splat_blocks();
        block_lo_.assign(static_cast<size_t>(blocks), 0);
        block_hi_.assign(static_cast<size_t>(blocks), static_cast<int32_t>(m_));
        if (m_ >= 16384 && blocks > 1) {
            run_tasks(blocks, threads, [&](int64_t blk) {
                int64_t lo, hi;
                block_bounds(static_cast<int>(blk), lo, hi);
                int32_t first = static_cast<int32_t>(m_), last = -1;
                for (int64_t e = lo * V; e < hi * V; ++e) {
                    first = std::min(first, offset_[static_cast<size_t>(e)]);
                    last = std::max(last, offset_[static_cast<size_t>(e)]);
                }
                block_lo_[static_cast<size_t>(blk)] = std::min(first, last + 1);
                block_hi_[static_cast<size_t>(blk)] = last + 1;
            });
        }

        // 3. Blur neighbours along each of the D+1 lattice directions (m_ = missing: a zero row).
        nbr_.resize(static_cast<size_t>(V * m_ * 2));
        parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
            int32_t n1[D], n2[D];
            for (int64_t p = lo; p < hi; ++p) {
                const int32_t *key = table.key(static_cast<size_t>(p));
                for (int j = 0; j <= D; ++j) {
                    neighbour_keys<D>(key, j, n1, n2);
                    const int32_t a = table.find(n1), b = table.find(n2);
                    int32_t *out = &nbr_[static_cast<size_t>((j * m_ + p) * 2)];
                    out[0] = a < 0 ? static_cast<int32_t>(m_) : a;
                    out[1] = b < 0 ? static_cast<int32_t>(m_) : b;
                }
            }
        }, 2048);
    }

    // The build of a 2-D lattice whose feature bounds are known (a pixel grid): the lattice
    // points are cells of a table that covers the bounds, so a vertex costs an index
    // computation instead of a hash-table insertion (about 100k of those at 512x512, sxy 3,
    // mostly missing the cache), and so does each blur neighbour. The points, each pixel's
    // vertices (in the same order) and weights are those of build_hashed, and so is the
    // numbering (order of first use; on one chunk, identical). Returns false, leaving the
    // build to build_hashed, when the table would be much larger than the lattice (tiny
    // sigmas) or a vertex falls outside it (not expected).
    template <class Feature>
    bool build_grid(Feature &feature, const double *scale, const FeatureBounds<D> &bounds,
                    int threads) {
        static_assert(D == 2, "the direct-indexed build is for 2-D lattices");
        // A lattice point (k0, k1, k2), integers summing to 0 and all congruent mod 3, is
        // given by c = k0 + k1 = -k2 and e = k0 - k1. embed() elevates features f to
        // (s0 f0 + s1 f1, s1 f1 - s0 f0, -2 s1 f1) (s = scale), so c ~ 2 s1 f1 follows the
        // image row and e ~ 2 s0 f0 the column. A vertex lies within 7.5 of the elevated point
        // in each coordinate (rounding to the remainder-0 point: 1.5; bringing it back onto the
        // plane: 3; the vertex offset: at most 3), so c is within 7.5 of 2 s1 f1 and e, a
        // difference of two coordinates, within 15 of 2 s0 f0.
        const double c_min = 2 * scale[1] * bounds.lo[1], c_max = 2 * scale[1] * bounds.hi[1];
        const double e_min = 2 * scale[0] * bounds.lo[0], e_max = 2 * scale[0] * bounds.hi[0];
        auto sane = [](double v) { return v > -1e7 && v < 1e7; };  // false for NaN
        if (!(sane(c_min) && sane(c_max) && sane(e_min) && sane(e_max) && c_min <= c_max &&
              e_min <= e_max))
            return false;
        // In one row c the points have e = 3 (c mod 2) + 6 j (e is a multiple of 3 with the
        // parity of c), so with e_lo a multiple of 6, cell (c - c_lo, (e - e_lo) / 6) of the
        // table is one point.
        const int64_t c_lo = static_cast<int64_t>(std::floor(c_min)) - 8;
        const int64_t c_hi = static_cast<int64_t>(std::ceil(c_max)) + 8;
        const int64_t e_lo = 6 * static_cast<int64_t>(std::floor((e_min - 16) / 6));
        const int64_t e_hi = static_cast<int64_t>(std::ceil(e_max)) + 16;
        const int64_t rows = c_hi - c_lo + 1, cols = (e_hi - e_lo) / 6 + 1;
        const int64_t cells = rows * cols;
        // A pixel reaches 3 points: a table much larger than 3n would be mostly empty.
        if (cells > std::min<int64_t>(4 * n_ + 65536, INT32_MAX)) return false;

        // 1. Embed the pixels (in parallel); offset_ receives the cells of their vertices. In
        // 32 bits (the features are below 1e6, see load_batch), unsigned, so that a coordinate
        // below the table's bounds wraps around above them. A vertex outside the table gets
        // cell 0 and hands the build to build_hashed; a pixel whose features are rejected gets
        // those of features 0, and the build fails.
        const uint32_t c_base = static_cast<uint32_t>(c_lo), e_base = static_cast<uint32_t>(e_lo);
        const uint32_t num_rows = static_cast<uint32_t>(rows);
        const uint32_t row_width = static_cast<uint32_t>(cols);
        std::atomic<bool> bad{false}, outside{false};
        const int chunks = chunk_count(n_, threads > 1 ? 4 * threads : 1, 16384);
        run_chunks(n_, chunks, threads, [&](int64_t lo, int64_t hi, int) {
            alignas(64) float batch_f[D * kBatch], batch_bary[V * kBatch];
            int32_t batch_rem0[V * kBatch], batch_rank[V * kBatch], batch_mask[V * kBatch];
            bool batch_ok[kBatch];
            bool missed = false;
            for (int64_t start = lo; start < hi; start += kBatch) {
                const int count = static_cast<int>(std::min<int64_t>(kBatch, hi - start));
                load_batch(feature, start, count, batch_f, batch_ok, bad);  // reported below
                embed_batch(batch_f, scale, batch_rem0, batch_rank, batch_mask, batch_bary);
                int32_t *off = &offset_[static_cast<size_t>(start * V)];
                std::copy(batch_bary, batch_bary + count * V,
                          &weight_[static_cast<size_t>(start * V)]);
                for (int p = 0; p < count; ++p) {
                    const int32_t *rem0 = &batch_rem0[p * V], *rank = &batch_rank[p * V];
                    for (int r = 0; r <= D; ++r) {
                        // Vertex r: rem0 + r on the coordinates ranked <= D - r, r - V on the
                        // others (as in build_hashed).
                        const uint32_t k0 =
                            static_cast<uint32_t>(rem0[0] + (rank[0] <= D - r ? r : r - V));
                        const uint32_t k1 =
                            static_cast<uint32_t>(rem0[1] + (rank[1] <= D - r ? r : r - V));
                        const uint32_t row = k0 + k1 - c_base, e = k0 - k1 - e_base;
                        const bool inside = row < num_rows && e / 6 < row_width;
                        missed |= !inside;
                        const uint32_t cell = inside ? row * row_width + e / 6 : 0;
                        off[p * V + r] = static_cast<int32_t>(cell);
                    }
                }
            }
            if (missed) outside = true;
        });
        if (bad) throw_bad_features();
        if (outside) return false;  // build_hashed rewrites offset_ and weight_

        // 2. Number the cells in order of first use, in one pass in pixel order (about 1 ns a
        // vertex), and note the points each splat block reaches: [block_lo_, block_hi_) (see
        // build_hashed). A pixel row's new points thus get consecutive numbers, which the
        // splats and slices of every iteration prefer: numbered in table order instead, a
        // splat took 2-5% longer.
        std::vector<int32_t> number(static_cast<size_t>(cells), -1);
        std::vector<int32_t> cell_of_point(static_cast<size_t>(cells));
        int32_t m = 0;
        const int blocks = splat_blocks();
        block_lo_.assign(static_cast<size_t>(blocks), 0);
        block_hi_.assign(static_cast<size_t>(blocks), 0);
        for (int blk = 0; blk < blocks; ++blk) {
            int64_t lo, hi;
            block_bounds(blk, lo, hi);
            int32_t first = INT32_MAX, last = -1;
            for (int64_t e = lo * V; e < hi * V; ++e) {
                int32_t &vertex = offset_[static_cast<size_t>(e)];
                int32_t &point = number[static_cast<size_t>(vertex)];
                if (point < 0) {
                    cell_of_point[static_cast<size_t>(m)] = vertex;
                    point = m++;
                }
                vertex = point;
                first = std::min(first, point);
                last = std::max(last, point);
            }
            block_lo_[static_cast<size_t>(blk)] = std::min(first, last + 1);
            block_hi_[static_cast<size_t>(blk)] = last + 1;
        }
        m_ = m;

        // 3. Blur neighbours (as in build_hashed, m_ = missing), looked up in the table.
        nbr_.resize(static_cast<size_t>(V * m_ * 2));
        parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
            auto point_at = [&](const int64_t *k) -> int32_t {
                const int64_t c = k[0] + k[1], e = k[0] - k[1];
                if (c < c_lo || c > c_hi || e < e_lo || (e - e_lo) / 6 >= cols)
                    return static_cast<int32_t>(m_);
                const int64_t cell = (c - c_lo) * cols + (e - e_lo) / 6;
                const int32_t p = number[static_cast<size_t>(cell)];
                return p < 0 ? static_cast<int32_t>(m_) : p;  // -1: a cell no pixel reaches
            };
            int64_t key[D], n1[D], n2[D];
            for (int64_t p = lo; p < hi; ++p) {
                const int64_t cell = cell_of_point[static_cast<size_t>(p)];
                const int64_t c = c_lo + cell / cols;
                const int64_t e = e_lo + 6 * (cell % cols) + 3 * (c & 1);
                key[0] = (c + e) / 2;  // exact: c and e have the same parity
                key[1] = (c - e) / 2;
                for (int j = 0; j <= D; ++j) {
                    neighbour_keys<D>(key, j, n1, n2);
                    int32_t *out = &nbr_[static_cast<size_t>((j * m_ + p) * 2)];
                    out[0] = point_at(n1);
                    out[1] = point_at(n2);
                }
            }
        }, 2048);
        return true;
    }

    template <class T, int KC>
    void filter_impl(const T *in, T *out, int channels, int threads, const T *pre,
                     const T *post, T alpha, bool accumulate) const {
        Buffers<T> buf;
        clear(buf, KC > 0 ? KC : channels, threads);
        // Splat: each block of pixels (a number that depends on n only) accumulates into its
        // own buffer and blur() sums them in block order, so the result is the same whatever
        // the number of threads.
        run_tasks(splat_blocks(), threads, [&](int64_t blk) {
            int64_t lo, hi;
            block_bounds(static_cast<int>(blk), lo, hi);
            splat<T, KC>(buf, static_cast<int>(blk), lo, hi, in, n_, 0, pre);
        });
        blur<T, KC>(buf, threads);
        parallel_for(n_, threads, [&](int64_t lo, int64_t hi) {
            slice<T, KC>(buf, lo, hi, out, n_, 0, post, alpha, accumulate);
        });
    }

    int64_t n_ = 0;  // pixels
    int64_t m_ = 0;  // lattice points
    PoolArray<int32_t> offset_;  // n*V: lattice point of each simplex vertex
    PoolArray<float> weight_;    // n*V: barycentric weights
    std::vector<int32_t> nbr_;           // V*m*2: blur neighbours per direction
    std::vector<int32_t> block_lo_, block_hi_;  // per splat block: the points it reaches
};

}  // namespace bl
