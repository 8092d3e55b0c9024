// Mean-field inference of a fully connected CRF over an RGB image with Potts compatibilities
// (Kraehenbuehl & Koltun, "Efficient Inference in Fully Connected CRFs with Gaussian Edge
// Potentials", NIPS 2011), with the same conventions as their reference implementation:
//   - a Gaussian smoothness kernel over (x, y) / gauss_sxy and a bilateral appearance kernel
//     over (x, y) / bilateral_sxy and (r, g, b) / bilateral_srgb;
//   - each kernel symmetrically normalised, K~ = D^-1/2 K D^-1/2 with D = diag(K 1);
//   - Q <- softmax(-unary + sum_kernels weight * K~ Q), starting from Q = softmax(-unary).
// Both lattices are built once; every iteration only splats, blurs and slices.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
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

// q (K x n, channel-major) <- softmax over channels of (-unary + msg); msg may be null. With
// `total` given, msg holds only the first K-1 channels and the last one is total - sum(msg).
inline void softmax_update(const float *unary, const float *msg, const float *total, float *q,
                           int K, int64_t n, int threads) {
    parallel_for(n, threads, [&](int64_t lo, int64_t hi) {
        std::vector<float> x(static_cast<size_t>(K));
        for (int64_t i = lo; i < hi; ++i) {
            float top = -INFINITY, rest = total ? total[i] : 0.f;
            for (int k = 0; k < K; ++k) {
                float m = 0.f;
                if (msg && (!total || k < K - 1)) {
                    m = msg[k * n + i];
                    rest -= m;
                } else if (total) {
                    m = rest;
                }
                x[k] = -unary[k * n + i] + m;
                top = std::max(top, x[k]);
            }
            float sum = 0.f;
            for (int k = 0; k < K; ++k) {
                x[k] = x[k] == top ? 1.f : std::exp(x[k] - top);  // one exp fewer
                sum += x[k];
            }
            const float inv = 1.f / sum;
            for (int k = 0; k < K; ++k) q[k * n + i] = x[k] * inv;
        }
    });
}

// 1 / sqrt(K 1): the symmetric normalisation of a kernel.
template <int D>
std::vector<float> symmetric_norm(const Lattice<D> &lattice, int threads) {
    const int64_t n = lattice.num_pixels();
    std::vector<float> norm(static_cast<size_t>(n), 1.f);
    lattice.filter(norm.data(), norm.data(), 1, threads);
    for (float &v : norm) v = 1.f / std::sqrt(v + 1e-20f);
    return norm;
}

// Runs mean-field inference; image is h x w x 3 (RGB), unary and q are K x (h*w).
inline void dense_crf(const uint8_t *image, int64_t h, int64_t w, const float *unary, int K,
                      const CrfParams &p, float *q, int threads) {
    const int64_t n = h * w;
    softmax_update(unary, nullptr, nullptr, q, K, n, threads);
    if (p.iterations <= 0) return;

    std::unique_ptr<Lattice<2>> gauss;
    std::unique_ptr<Lattice<5>> bilateral;
    std::vector<float> gauss_norm, bilateral_norm;
    if (p.gauss_weight != 0.f) {
        const float inv = 1.f / p.gauss_sxy;
        gauss = std::make_unique<Lattice<2>>(n, [&](int64_t i, float *f) {
            f[0] = static_cast<float>(i % w) * inv;
            f[1] = static_cast<float>(i / w) * inv;
        }, threads);
        gauss_norm = symmetric_norm(*gauss, threads);
    }
    if (p.bilateral_weight != 0.f) {
        const float inv_xy = 1.f / p.bilateral_sxy, inv_rgb = 1.f / p.bilateral_srgb;
        bilateral = std::make_unique<Lattice<5>>(n, [&](int64_t i, float *f) {
            const uint8_t *px = image + 3 * i;
            f[0] = static_cast<float>(i % w) * inv_xy;
            f[1] = static_cast<float>(i / w) * inv_xy;
            f[2] = px[0] * inv_rgb;
            f[3] = px[1] * inv_rgb;
            f[4] = px[2] * inv_rgb;
        }, threads);
        bilateral_norm = symmetric_norm(*bilateral, threads);
    }

    // Potts messages are weight * K~ Q_k per label. Q sums to one over labels at every pixel,
    // so K~ Q_last = K~ 1 - sum_{k<last} K~ Q_k: only K-1 channels need filtering, against a
    // per-pixel total sum_kernels weight * K~ 1 computed once.
    const int filtered = K - 1;
    const float *const kNoScale = nullptr;
    std::vector<float> total(static_cast<size_t>(n), 0.f);
    if (gauss)
        gauss->filter(gauss_norm.data(), total.data(), 1, threads, kNoScale, gauss_norm.data(),
                      p.gauss_weight, false);
    if (bilateral)
        bilateral->filter(bilateral_norm.data(), total.data(), 1, threads, kNoScale,
                          bilateral_norm.data(), p.bilateral_weight, gauss != nullptr);
    std::vector<float> msg(static_cast<size_t>(filtered * n), 0.f);
    for (int it = 0; it < p.iterations; ++it) {
        if (gauss)
            gauss->filter(q, msg.data(), filtered, threads, gauss_norm.data(), gauss_norm.data(),
                          p.gauss_weight, false);
        if (bilateral)
            bilateral->filter(q, msg.data(), filtered, threads, bilateral_norm.data(),
                              bilateral_norm.data(), p.bilateral_weight, gauss != nullptr);
        const bool any = gauss || bilateral;
        softmax_update(unary, any ? msg.data() : nullptr, any ? total.data() : nullptr, q, K, n,
                       threads);
    }
}

}  // namespace bl
