// Python bindings (nanobind) of the permutohedral-lattice bilateral filter and dense CRF:
// the private module bench._bilateral. bench/crf.py validates inputs and is the public API;
// this layer still checks shapes so that a bad call raises ValueError instead of crashing.
// Every entry point releases the GIL while it computes.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "lattice.hpp"
#include "meanfield.hpp"
#include "parallel.hpp"
#include "pool.hpp"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

template <class T>
using Input = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;
template <class T>
using Output = nb::ndarray<nb::numpy, T>;

// A new C-contiguous NumPy array that owns its buffer. Large buffers come from the recycling
// pool (ext/pool.hpp) and go back to it when the array is freed: a CRF refiner's output of one
// call is usually gone before the next. The block starts with its capacity (kHeader bytes, so
// the data stay 64-byte aligned).
template <class T>
Output<T> new_array(const std::vector<size_t> &shape) {
    constexpr size_t kHeader = 64;
    size_t size = 1;
    for (size_t s : shape) size *= s;
    size_t capacity = 0;
    char *block = static_cast<char *>(
        bl::BufferPool::instance().acquire(kHeader + std::max<size_t>(size, 1) * sizeof(T),
                                           capacity));
    std::memcpy(block, &capacity, sizeof capacity);
    nb::capsule owner(block, [](void *p) noexcept {
        size_t held;
        std::memcpy(&held, p, sizeof held);
        bl::BufferPool::instance().release(p, held);
    });
    return Output<T>(reinterpret_cast<T *>(block + kHeader), shape.size(), shape.data(), owner);
}

void require(bool ok, const std::string &message) {
    if (!ok) throw std::invalid_argument(message);
}

int threads_or_default(int threads) { return threads <= 0 ? bl::hardware_threads() : threads; }

void check_sigma(double sigma, const char *name) {
    require(std::isfinite(sigma) && sigma > 0, std::string(name) + " must be a positive number");
}

// Type-erased lattice so that Python sees one class whatever the feature dimension.
struct AnyLattice {
    virtual ~AnyLattice() = default;
    virtual int dim() const = 0;
    virtual int64_t num_pixels() const = 0;
    virtual int64_t num_points() const = 0;
    virtual void filter(const float *in, float *out, int k, int threads) const = 0;
    virtual void filter(const double *in, double *out, int k, int threads) const = 0;
};

template <int D>
struct LatticeOf final : AnyLattice {
    template <class Feature>
    LatticeOf(int64_t n, Feature &&feature, int threads,
              const bl::FeatureBounds<D> *bounds = nullptr)
        : lattice(n, feature, threads, bounds) {}
    int dim() const override { return D; }
    int64_t num_pixels() const override { return lattice.num_pixels(); }
    int64_t num_points() const override { return lattice.num_points(); }
    void filter(const float *in, float *out, int k, int threads) const override {
        lattice.filter(in, out, k, threads);
    }
    void filter(const double *in, double *out, int k, int threads) const override {
        lattice.filter(in, out, k, threads);
    }
    bl::Lattice<D> lattice;
};

// Lattice over (x/sigma_xy, y/sigma_xy, r/sigma_rgb, g/sigma_rgb, b/sigma_rgb) of an image.
std::unique_ptr<LatticeOf<5>> image_lattice(const uint8_t *image, int64_t h, int64_t w,
                                            double sigma_xy, double sigma_rgb, int threads) {
    const float inv_xy = static_cast<float>(1.0 / sigma_xy);
    const float inv_rgb = static_cast<float>(1.0 / sigma_rgb);
    const bl::PixelGrid grid(w);
    return std::make_unique<LatticeOf<5>>(h * w, [=](int64_t i, float *f) {
        const uint8_t *px = image + 3 * i;
        int64_t x, y;
        grid.xy(i, x, y);
        f[0] = static_cast<float>(x) * inv_xy;
        f[1] = static_cast<float>(y) * inv_xy;
        f[2] = px[0] * inv_rgb;
        f[3] = px[1] * inv_rgb;
        f[4] = px[2] * inv_rgb;
    }, threads);
}

class PyLattice {
  public:
    explicit PyLattice(std::unique_ptr<AnyLattice> impl) : impl_(std::move(impl)) {}

    static PyLattice from_image(Input<uint8_t> image, double sigma_xy, double sigma_rgb,
                                int num_threads) {
        require(image.ndim() == 3 && image.shape(2) == 3,
                "image must be a uint8 array of shape (H, W, 3)");
        require(image.shape(0) > 0 && image.shape(1) > 0, "image must not be empty");
        check_sigma(sigma_xy, "sigma_xy");
        check_sigma(sigma_rgb, "sigma_rgb");
        const int threads = threads_or_default(num_threads);
        nb::gil_scoped_release release;
        return PyLattice(image_lattice(image.data(), static_cast<int64_t>(image.shape(0)),
                                       static_cast<int64_t>(image.shape(1)), sigma_xy,
                                       sigma_rgb, threads));
    }

    static PyLattice from_grid(int64_t height, int64_t width, double sigma_xy,
                               int num_threads) {
        require(height > 0 && width > 0, "height and width must be positive");
        check_sigma(sigma_xy, "sigma_xy");
        const int threads = threads_or_default(num_threads);
        const float inv = static_cast<float>(1.0 / sigma_xy);
        nb::gil_scoped_release release;
        const bl::PixelGrid grid(width);
        const bl::FeatureBounds<2> bounds = bl::grid_bounds(height, width, inv);
        return PyLattice(std::make_unique<LatticeOf<2>>(height * width, [=](int64_t i, float *f) {
            int64_t x, y;
            grid.xy(i, x, y);
            f[0] = static_cast<float>(x) * inv;
            f[1] = static_cast<float>(y) * inv;
        }, threads, &bounds));
    }

    static PyLattice from_features(Input<float> features, int num_threads) {
        require(features.ndim() == 2 && features.shape(0) > 0,
                "features must be a float32 array of shape (N, D) with N > 0");
        const int64_t n = static_cast<int64_t>(features.shape(0));
        const size_t d = features.shape(1);
        const float *f = features.data();
        const int threads = threads_or_default(num_threads);
        auto copy = [f, d](int64_t i, float *out) {
            for (size_t j = 0; j < d; ++j) out[j] = f[static_cast<size_t>(i) * d + j];
        };
        nb::gil_scoped_release release;
        switch (d) {
            case 2: return PyLattice(std::make_unique<LatticeOf<2>>(n, copy, threads));
            case 3: return PyLattice(std::make_unique<LatticeOf<3>>(n, copy, threads));
            case 5: return PyLattice(std::make_unique<LatticeOf<5>>(n, copy, threads));
            default: break;
        }
        throw std::invalid_argument("features must have D = 2, 3 or 5 columns, got " +
                                    std::to_string(d));
    }

    template <class T>
    Output<T> filter(Input<T> values, int num_threads) const {
        require(values.ndim() == 2 &&
                    static_cast<int64_t>(values.shape(1)) == impl_->num_pixels(),
                "values must have shape (K, " + std::to_string(impl_->num_pixels()) + ")");
        const int k = static_cast<int>(values.shape(0));
        Output<T> out = new_array<T>({values.shape(0), values.shape(1)});
        const int threads = threads_or_default(num_threads);
        {
            nb::gil_scoped_release release;
            impl_->filter(values.data(), out.data(), k, threads);
        }
        return out;
    }

    int dim() const { return impl_->dim(); }
    int64_t num_pixels() const { return impl_->num_pixels(); }
    int64_t num_points() const { return impl_->num_points(); }

  private:
    std::shared_ptr<AnyLattice> impl_;
};

// Filters a batch: images (B, H, W, 3) uint8, values (B, K, H, W). With at least as many
// images as threads, each thread takes whole images (no synchronisation inside an image);
// otherwise the images go one after the other, each using all threads.
template <class T>
Output<T> filter_batch(Input<uint8_t> images, Input<T> values, double sigma_xy,
                       double sigma_rgb, int num_threads) {
    require(images.ndim() == 4 && images.shape(3) == 3,
            "images must be a uint8 array of shape (B, H, W, 3)");
    require(values.ndim() == 4 && values.shape(0) == images.shape(0) &&
                values.shape(2) == images.shape(1) && values.shape(3) == images.shape(2),
            "values must have shape (B, K, H, W) matching images (B, H, W, 3)");
    require(images.shape(1) > 0 && images.shape(2) > 0, "images must not be empty");
    check_sigma(sigma_xy, "sigma_xy");
    check_sigma(sigma_rgb, "sigma_rgb");
    const int64_t batch = static_cast<int64_t>(images.shape(0));
    const int64_t h = static_cast<int64_t>(images.shape(1));
    const int64_t w = static_cast<int64_t>(images.shape(2));
    const int k = static_cast<int>(values.shape(1));
    Output<T> out = new_array<T>({values.shape(0), values.shape(1), values.shape(2),
                                  values.shape(3)});
    const int threads = threads_or_default(num_threads);
    const uint8_t *img = images.data();
    const T *in = values.data();
    T *dst = out.data();
    nb::gil_scoped_release release;
    auto one = [&](int64_t b, int inner) {
        auto lattice = image_lattice(img + b * h * w * 3, h, w, sigma_xy, sigma_rgb, inner);
        lattice->filter(in + b * k * h * w, dst + b * k * h * w, k, inner);
    };
    if (batch >= threads && threads > 1) {
        bl::run_tasks(batch, threads, [&](int64_t b) { one(b, 1); });
    } else {
        for (int64_t b = 0; b < batch; ++b) one(b, threads);
    }
    return out;
}

Output<float> dense_crf(Input<uint8_t> image, Input<float> unary, double gauss_sxy,
                        double gauss_weight, double bilateral_sxy, double bilateral_srgb,
                        double bilateral_weight, int iterations, int num_threads) {
    require(image.ndim() == 3 && image.shape(2) == 3,
            "image must be a uint8 array of shape (H, W, 3)");
    require(unary.ndim() == 3 && unary.shape(1) == image.shape(0) &&
                unary.shape(2) == image.shape(1) && unary.shape(0) > 0,
            "unary must have shape (K, H, W) matching image (H, W, 3)");
    require(image.shape(0) > 0 && image.shape(1) > 0, "image must not be empty");
    check_sigma(gauss_sxy, "gauss_sxy");
    check_sigma(bilateral_sxy, "bilateral_sxy");
    check_sigma(bilateral_srgb, "bilateral_srgb");
    require(std::isfinite(gauss_weight) && std::isfinite(bilateral_weight),
            "kernel weights must be finite");
    require(iterations >= 0, "iterations must be >= 0");
    bl::CrfParams p;
    p.gauss_sxy = static_cast<float>(gauss_sxy);
    p.gauss_weight = static_cast<float>(gauss_weight);
    p.bilateral_sxy = static_cast<float>(bilateral_sxy);
    p.bilateral_srgb = static_cast<float>(bilateral_srgb);
    p.bilateral_weight = static_cast<float>(bilateral_weight);
    p.iterations = iterations;
    Output<float> q = new_array<float>({unary.shape(0), unary.shape(1), unary.shape(2)});
    const int threads = threads_or_default(num_threads);
    const uint8_t *img = image.data();
    const float *u = unary.data();
    float *dst = q.data();
    {
        nb::gil_scoped_release release;
        bl::dense_crf(img, static_cast<int64_t>(image.shape(0)),
                      static_cast<int64_t>(image.shape(1)), u, static_cast<int>(unary.shape(0)),
                      p, dst, threads);
    }
    return q;
}

}  // namespace

NB_MODULE(_bilateral, m) {
    m.doc() = "Permutohedral-lattice bilateral filter and dense CRF (private; use bench.crf).";

    nb::class_<PyLattice>(m, "Lattice",
        "A permutohedral lattice built once over N points' features; filter() applies "
        "out_i ~= sum_j exp(-|f_i - f_j|^2 / 2) * values_j to (K, N) arrays.")
        .def_static("from_image", &PyLattice::from_image, "image"_a, "sigma_xy"_a,
                    "sigma_rgb"_a, "num_threads"_a = 0,
                    "Lattice over (x/sigma_xy, y/sigma_xy, rgb/sigma_rgb) of an (H, W, 3) "
                    "uint8 image; points are pixels in row-major order.")
        .def_static("from_grid", &PyLattice::from_grid, "height"_a, "width"_a, "sigma_xy"_a,
                    "num_threads"_a = 0,
                    "Lattice over (x/sigma_xy, y/sigma_xy) of an H x W pixel grid.")
        .def_static("from_features", &PyLattice::from_features, "features"_a,
                    "num_threads"_a = 0,
                    "Lattice over arbitrary float32 features of shape (N, D), D in {2, 3, 5}.")
        .def("filter", &PyLattice::filter<float>, "values"_a, "num_threads"_a = 0)
        .def("filter", &PyLattice::filter<double>, "values"_a, "num_threads"_a = 0,
             "Filter a (K, N) float32 or float64 array; returns a new array of the same "
             "shape and dtype.")
        .def_prop_ro("dim", &PyLattice::dim, "Feature dimension D.")
        .def_prop_ro("num_pixels", &PyLattice::num_pixels, "Number of points filtered (N).")
        .def_prop_ro("num_points", &PyLattice::num_points, "Number of lattice vertices.");

    m.def("filter_batch", &filter_batch<float>, "images"_a, "values"_a, "sigma_xy"_a,
          "sigma_rgb"_a, "num_threads"_a = 0);
    m.def("filter_batch", &filter_batch<double>, "images"_a, "values"_a, "sigma_xy"_a,
          "sigma_rgb"_a, "num_threads"_a = 0,
          "Bilateral filter of (B, K, H, W) values over (B, H, W, 3) uint8 images.");
    m.def("dense_crf", &dense_crf, "image"_a, "unary"_a, "gauss_sxy"_a, "gauss_weight"_a,
          "bilateral_sxy"_a, "bilateral_srgb"_a, "bilateral_weight"_a, "iterations"_a,
          "num_threads"_a = 0,
          "Mean-field inference of a dense CRF (Potts); unary (K, H, W) float32 energies "
          "(-log p); returns (K, H, W) float32 probabilities.");
    m.def("clear_cache", [] {
              bl::GridCache::instance().clear();
              bl::BufferPool::instance().clear();
          },
          "Forget the Gaussian-kernel lattices dense_crf keeps for its next calls, and free "
          "the recycled buffers.");
    m.def("pool_bytes", [] { return bl::BufferPool::instance().held_bytes(); },
          "Bytes of recycled buffers held for the next calls (at most 64 MiB).");
    m.def("cache_size", [] { return bl::GridCache::instance().size(); },
          "Number of Gaussian-kernel lattices dense_crf keeps (by grid size, sxy, weight).");
    m.def("hardware_threads", &bl::hardware_threads, "Number of hardware threads.");
    m.def("lattice_scale", [](int d) {
        switch (d) {
            case 2: return bl::Lattice<2>::scale();
            case 3: return bl::Lattice<3>::scale();
            case 5: return bl::Lattice<5>::scale();
            default: throw std::invalid_argument("dimension must be 2, 3 or 5");
        }
    }, "dim"_a, "Constant the raw lattice result is multiplied by (sqrt(D+1)*(4*pi/3)^(D/2)).");
}
