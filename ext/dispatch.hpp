// Runtime choice between baseline x86-64 code and an AVX2 build of the same few hot loops
// (lattice embedding, mean-field update). Both builds run the same IEEE operations in the same
// order (the AVX2 target adds wider vectors, not FMA, and nothing here reassociates), so they
// give bit-identical results; tests check this by running with BENCH_NO_AVX2=1, which forces
// the baseline build.
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BL_HAVE_AVX2_BUILD 1
#define BL_TARGET_AVX2 __attribute__((target("avx2")))
// A body inlined into both builds (a function with the baseline target may be inlined into
// one with a wider target, and is then compiled for it).
#define BL_INLINE_BODY inline __attribute__((always_inline))
#else
#define BL_HAVE_AVX2_BUILD 0
#define BL_TARGET_AVX2
#define BL_INLINE_BODY inline
#endif

namespace bl {

// Whether to run the AVX2 builds: the CPU has AVX2 and BENCH_NO_AVX2 is unset (or "0").
inline bool use_avx2() {
#if BL_HAVE_AVX2_BUILD
    static const bool use = [] {
        const char *off = std::getenv("BENCH_NO_AVX2");
        if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }();
    return use;
#else
    return false;
#endif
}

}  // namespace bl
