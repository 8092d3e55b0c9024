// Permutohedral lattice for fast high-dimensional Gaussian filtering
// (Adams, Baek & Davis, "Fast High-Dimensional Filtering Using the Permutohedral Lattice",
// Eurographics 2010), the filter behind the dense CRF of Kraehenbuehl & Koltun (2011).
//
// A Lattice<D> is built once per image from its D-dimensional features (already divided by
// their standard deviations). Construction embeds every pixel in the lattice, finds the D+1
// vertices of its enclosing simplex and their barycentric weights, numbers the lattice points
// with a hash table and precomputes the blur neighbours. filter() then only splats, blurs and
// slices, so repeated filterings of one image (mean-field iterations) pay nothing for
// construction.
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

#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "hash_table.hpp"
#include "parallel.hpp"

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

template <int D>
class Lattice {
  public:
    static constexpr int V = D + 1;  // vertices of a simplex

    // Builds the lattice of n points; feature(i, float *f) writes the D features of point i.
    template <class Feature>
    Lattice(int64_t n, Feature &&feature, int threads) : n_(n) {
        if (n <= 0) throw std::invalid_argument("a lattice needs at least one point");
        if (n * V >= (int64_t(1) << 31))
            throw std::invalid_argument("too many pixels for one lattice (limit 2^31 / (D+1))");
        build(feature, threads);
    }

    int64_t num_pixels() const { return n_; }
    int64_t num_points() const { return m_; }

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

  private:
    // Number of pixel blocks splatted into separate buffers (a function of n only).
    int splat_blocks() const {
        return static_cast<int>(std::min<int64_t>(8, std::max<int64_t>(1, n_ / 32768)));
    }

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

    template <class Feature>
    void build(Feature &feature, int threads) {
        // Left uninitialised (every entry is written below, in parallel: first touch).
        offset_.reset(new int32_t[static_cast<size_t>(n_ * V)]);
        weight_.reset(new float[static_cast<size_t>(n_ * V)]);
        double scale[D];
        const double inv_std = V * std::sqrt(2.0 / 3.0);
        for (int i = 0; i < D; ++i) scale[i] = inv_std / std::sqrt((i + 1.0) * (i + 2.0));

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
            float f[D], bary[V];
            int32_t rem0[V], rank[V], prev_rem0[D], key[D];
            int32_t *known = nullptr;     // `around` row of the current centre
            for (int64_t i = lo; i < hi; ++i) {
                feature(i, f);
                int32_t *off = &offset_[static_cast<size_t>(i * V)];
                bool finite = true;
                for (int d = 0; d < D; ++d) finite &= std::fabs(f[d]) < 1e6f;  // false for NaN
                if (!finite) {  // reported after the loop; never embed (integer overflow)
                    bad = true;
                    for (int r = 0; r <= D; ++r) {
                        off[r] = 0;
                        weight_[static_cast<size_t>(i * V + r)] = 0.f;
                    }
                    continue;
                }
                embed(f, scale, rem0, rank, bary);
                bool same = known != nullptr;
                for (int d = 0; same && d < D; ++d) same = rem0[d] == prev_rem0[d];
                if (!same) {  // a new centre for this pixel (rem0[D] follows: coordinates sum to 0)
                    const size_t count = centres.size();
                    const size_t centre = static_cast<size_t>(centres.insert(rem0));
                    if (centre == count) around.resize((count + 1) * kMasks, -1);
                    known = &around[centre * kMasks];
                    for (int d = 0; d < D; ++d) prev_rem0[d] = rem0[d];
                }
                int32_t by_rank[V];  // coordinate of each rank
                for (int d = 0; d <= D; ++d) by_rank[rank[d]] = d;
                int mask = 0;  // coordinates ranked above D - r
                for (int r = 0; r <= D; ++r) {
                    if (r > 0) mask |= 1 << by_rank[D - r + 1];
                    int32_t &vertex = known[mask];
                    if (vertex < 0) {
                        for (int d = 0; d < D; ++d)
                            key[d] = rem0[d] + (rank[d] <= D - r ? r : r - V);
                        vertex = table.insert(key);
                    }
                    off[r] = vertex;
                }
                for (int r = 0; r <= D; ++r) weight_[static_cast<size_t>(i * V + r)] = bary[r];
            }
        });
        if (bad)
            throw std::invalid_argument(
                "lattice features must be finite and below 1e6 in magnitude "
                "(is a sigma tiny or not finite?)");

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

        // 3. Blur neighbours along each of the D+1 lattice directions (m_ = missing: a zero row).
        nbr_.resize(static_cast<size_t>(V * m_ * 2));
        parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
            int32_t n1[D], n2[D];
            for (int64_t p = lo; p < hi; ++p) {
                const int32_t *key = table.key(static_cast<size_t>(p));
                for (int j = 0; j <= D; ++j) {
                    for (int d = 0; d < D; ++d) {
                        n1[d] = key[d] - 1;
                        n2[d] = key[d] + 1;
                    }
                    if (j < D) {
                        n1[j] = key[j] + D;
                        n2[j] = key[j] - D;
                    }
                    const int32_t a = table.find(n1), b = table.find(n2);
                    int32_t *out = &nbr_[static_cast<size_t>((j * m_ + p) * 2)];
                    out[0] = a < 0 ? static_cast<int32_t>(m_) : a;
                    out[1] = b < 0 ? static_cast<int32_t>(m_) : b;
                }
            }
        }, 2048);
    }

    template <class T, int KC>
    void filter_impl(const T *in, T *out, int channels, int threads, const T *pre,
                     const T *post, T alpha, bool accumulate) const {
        const int K = KC > 0 ? KC : channels;
        const size_t rows = static_cast<size_t>(m_ + 1);
        std::vector<T> a(rows * K, T(0)), b(rows * K, T(0));  // row m_ stays zero
        const int64_t n = n_;

        // Splat: scatter each pixel's values onto its simplex's vertices. The pixels are cut
        // into a number of blocks that depends on n only; each block accumulates into its own
        // buffer (block 0 into `a`) and the buffers are summed in block order, so the result
        // is the same whatever the number of threads.
        const int blocks = splat_blocks();
        std::vector<T> extra(static_cast<size_t>(blocks - 1) * rows * K, T(0));
        run_tasks(blocks, threads, [&](int64_t blk) {
            {
                T *dst = blk == 0 ? a.data() : extra.data() + (blk - 1) * rows * K;
                int64_t lo, hi;
                chunk_bounds(n, blocks, static_cast<int>(blk), lo, hi);
                Accumulator<T, KC> store;
                T *v = store.data(K);
                for (int64_t i = lo; i < hi; ++i) {
                    const T scale_i = pre ? pre[i] : T(1);
                    for (int k = 0; k < K; ++k) v[k] = scale_i * in[k * n + i];
                    const int32_t *off = &offset_[static_cast<size_t>(i * V)];
                    const float *w = &weight_[static_cast<size_t>(i * V)];
                    for (int r = 0; r <= D; ++r) {
                        T *row = dst + static_cast<int64_t>(off[r]) * K;
                        const T wr = static_cast<T>(w[r]);
                        for (int k = 0; k < K; ++k) row[k] += wr * v[k];
                    }
                }
            }
        });
        if (blocks > 1) {
            parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
                for (int64_t blk = 1; blk < blocks; ++blk) {
                    const T *src = extra.data() + (blk - 1) * rows * K;
                    for (int64_t q = lo * K; q < hi * K; ++q) a[static_cast<size_t>(q)] += src[q];
                }
            }, 8192);
        }

        // Blur with F = B_0 B_1 .. B_D (kernel [1/4, 1/2, 1/4] along each lattice direction)
        // and with its transpose F^T = B_D .. B_0, from the same splatted values; the slice
        // takes their mean, so the filter S^T (F + F^T) / 2 S is an exactly symmetric matrix.
        std::vector<T> c(a);
        auto blur_pass = [&](const T *src, T *dst, int j) {
            const int32_t *nb = &nbr_[static_cast<size_t>(j * m_ * 2)];
            parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
                for (int64_t p = lo; p < hi; ++p) {
                    const T *mid = src + p * K;
                    const T *x = src + static_cast<int64_t>(nb[2 * p]) * K;
                    const T *y = src + static_cast<int64_t>(nb[2 * p + 1]) * K;
                    T *o = dst + p * K;
                    for (int k = 0; k < K; ++k) o[k] = T(0.5) * mid[k] + T(0.25) * (x[k] + y[k]);
                }
            }, 8192);
        };
        for (int j = 0; j <= D; ++j) {
            blur_pass(a.data(), b.data(), j);
            a.swap(b);
        }
        for (int j = D; j >= 0; --j) {
            blur_pass(c.data(), b.data(), j);
            c.swap(b);
        }

        // Slice: interpolate every pixel from its simplex's vertices, in (F + F^T) / 2.
        parallel_for(m_, threads, [&](int64_t lo, int64_t hi) {
            for (int64_t q = lo * K; q < hi * K; ++q) a[static_cast<size_t>(q)] += c[q];
        }, 8192);
        const T gain = alpha * static_cast<T>(0.5 * scale());
        const T *lat = a.data();
        parallel_for(n, threads, [&](int64_t lo, int64_t hi) {
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
                    T &o = out[k * n + i];
                    o = accumulate ? o + g * acc[k] : g * acc[k];
                }
            }
        });
    }

    int64_t n_ = 0;  // pixels
    int64_t m_ = 0;  // lattice points
    std::unique_ptr<int32_t[]> offset_;  // n*V: lattice point of each simplex vertex
    std::unique_ptr<float[]> weight_;    // n*V: barycentric weights
    std::vector<int32_t> nbr_;           // V*m*2: blur neighbours per direction
};

}  // namespace bl
