"""The random walk of AffinityNet/IRN on a sparse neighbourhood graph, and IRN's dense one.

IRN (Ahn, Cho & Kwak, CVPR 2019; ``propagate_to_edge`` in ``misc/indexing.py`` of
jiwoon-ahn/irn) propagates a CAM over a map of class boundaries ``B`` (values in [0, 1]):

1. the affinity of two pixels closer than ``radius`` is ``1 - max(B)`` along the line between
   them (`path_affinities`; `bench.pixel_pairs` has the pairs and paths); every pixel has
   affinity 1 with itself and 0 with pixels farther away;
2. ``A = affinity ** beta``, the transition matrix ``T = A / colsum(A)``;
3. the propagated map is ``(cam * (1 - B)) @ T ** (2 ** exp_times)`` (the CAM as a row vector
   over pixels).

IRN builds ``T`` as a dense ``HW x HW`` matrix and squares it ``exp_times`` times: a 512-px
tile gives a 128 x 128 map at stride 4, a 16k x 16k matrix (1 GiB in float32, several during
squaring) and 8 dense 16k-cubed products. Here ``T`` is a sparse matrix with one row per pixel
and one entry per neighbour within the radius (69 for radius 5), and the walk is ``2 **
exp_times`` sparse-dense products ``y <- T^T y`` (`random_walk`, `propagate`): the same numbers
in O(HW * neighbours) memory. `dense_random_walk` / `dense_propagate` are IRN's dense algorithm
in NumPy, the reference for tests and the benchmark (small maps only).

Torch-free (NumPy and scipy.sparse).
"""

from __future__ import annotations

import numpy as np

from bench.pixel_pairs import pair_offsets, pair_paths, pair_slices

#: IRN's defaults (``run_sample.py`` and ``make_sem_seg_labels.py``)
BETA = 10.0
EXP_TIMES = 8
RADIUS = 5


def path_affinities(boundary: np.ndarray, radius: int = RADIUS) -> np.ndarray:
    """float32 ``K x H x W`` affinities of the pairs of `bench.pixel_pairs.pair_offsets`:
    ``1 - max(boundary)`` along each pair's path; 0 where the destination is outside the map
    (IRN pads the boundary map with 1)."""
    b = np.asarray(boundary, dtype=np.float32)
    if b.ndim != 2:
        raise ValueError(f"boundary must be a 2-D map, got shape {b.shape}")
    h, w = b.shape
    r = int(radius)
    padded = np.pad(b, ((0, r), (r, r)), constant_values=1.0)
    out = np.empty((len(pair_offsets(r)), h, w), np.float32)
    for k, path in enumerate(pair_paths(r)):
        m = out[k]
        m[...] = padded[path[0, 0]:path[0, 0] + h, r + path[0, 1]:r + path[0, 1] + w]
        for py, px in path[1:]:
            np.maximum(m, padded[py:py + h, r + px:r + px + w], out=m)
    np.subtract(1.0, out, out=out)
    return out


def _check(values: np.ndarray, affinities: np.ndarray, radius: int, beta: float,
           exp_times: int) -> tuple[np.ndarray, bool]:
    x = np.asarray(values)
    single = x.ndim == 2
    if single:
        x = x[None]
    aff = np.asarray(affinities)
    k = len(pair_offsets(radius))
    if x.ndim != 3 or aff.shape != (k, *x.shape[1:]):
        raise ValueError(f"values must be HxW or CxHxW and affinities K x H x W with K={k} for "
                         f"radius {radius}; got {np.asarray(values).shape} and {aff.shape}")
    if not beta > 0 or exp_times < 0:
        raise ValueError(f"need beta > 0 and exp_times >= 0, got {beta} and {exp_times}")
    if aff.size and (np.nanmin(aff) < 0 or np.nanmax(aff) > 1 or not np.isfinite(aff).all()):
        raise ValueError("affinities must lie in [0, 1]")
    return x, single


def _pairs(h: int, w: int, affinities: np.ndarray, radius: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat indices (source, destination) and affinities of every pair inside the map."""
    index = np.arange(h * w, dtype=np.int64).reshape(h, w)
    src, dst, val = [], [], []
    for k, (dy, dx) in enumerate(pair_offsets(radius)):
        s, d = pair_slices(h, w, int(dy), int(dx))
        src.append(index[s].ravel())
        dst.append(index[d].ravel())
        val.append(affinities[k][s].ravel())
    return np.concatenate(src), np.concatenate(dst), np.concatenate(val)


def transition_matrix(affinities: np.ndarray, radius: int = RADIUS, beta: float = BETA,
                      dtype: type = np.float64) -> object:
    """``T^T`` as a ``scipy.sparse`` CSR matrix (``HW x HW``) for ``K x H x W`` pair
    affinities: ``A`` holds ``affinity ** beta`` for both directions of every pair and 1 on
    the diagonal; ``T = A / colsum(A)``, so ``T^T = diag(1 / rowsum(A)) A`` (``A`` is
    symmetric) and a walk step ``x @ T`` is ``T^T @ x``.

    On the flattened map, the pairs of offset ``(dy, dx)`` lie on the diagonal ``dy * W + dx``
    (and its mirror), so ``A`` is built as ``2K + 1`` diagonals (a pair whose destination
    would wrap into another row has affinity 0, `path_affinities`), then converted to CSR.
    """
    import scipy.sparse as sp

    aff = np.asarray(affinities)
    k, h, w = aff.shape
    n = h * w
    val = np.power(aff.astype(np.float64), float(beta))
    degree = np.ones((h, w))
    slices = [pair_slices(h, w, int(dy), int(dx)) for dy, dx in pair_offsets(radius)]
    for j, (src, dst) in enumerate(slices):
        degree[src] += val[j][src]
        degree[dst] += val[j][src]
    inv = 1.0 / degree
    data = np.zeros((2 * k + 1, h, w))
    offsets = np.zeros(2 * k + 1, np.int64)
    data[0] = inv
    for j, ((dy, dx), (src, dst)) in enumerate(zip(pair_offsets(radius), slices, strict=True)):
        # DIA stores entry (row, col) at data[diagonal, col]: row src -> col dst, and back
        offsets[1 + 2 * j] = int(dy) * w + int(dx)
        data[1 + 2 * j][dst] = val[j][src] * inv[src]
        offsets[2 + 2 * j] = -(int(dy) * w + int(dx))
        data[2 + 2 * j][src] = val[j][src] * inv[dst]
    t = sp.dia_matrix((data.reshape(2 * k + 1, n), offsets), shape=(n, n)).tocsr()
    t.eliminate_zeros()
    return t.astype(dtype, copy=False)


def random_walk(values: np.ndarray, affinities: np.ndarray, radius: int = RADIUS,
                beta: float = BETA, exp_times: int = EXP_TIMES,
                dtype: type = np.float64) -> np.ndarray:
    """``values @ T ** (2 ** exp_times)`` on the sparse graph: ``2 ** exp_times`` sparse-dense
    products. ``values``: HxW or CxHxW; ``affinities``: ``K x H x W`` (`path_affinities`).
    Returns the walked values, float32, shaped like ``values``."""
    x, single = _check(values, affinities, radius, beta, exp_times)
    c, h, w = x.shape
    t = transition_matrix(affinities, radius, beta, dtype)
    y = np.ascontiguousarray(x.reshape(c, h * w).T, dtype=dtype)
    if c == 1:
        y = y[:, 0]  # a vector: scipy's matvec, not matvecs
    for _ in range(2 ** int(exp_times)):
        y = t @ y
    out = np.ascontiguousarray(y.reshape(h * w, c).T).reshape(c, h, w).astype(np.float32)
    return out[0] if single else out


def dense_transition(affinities: np.ndarray, radius: int = RADIUS, beta: float = BETA,
                     dtype: type = np.float64) -> np.ndarray:
    """IRN's dense ``HW x HW`` transition matrix ``T = A ** beta / colsum(A ** beta)`` (the
    reference; memory grows with the fourth power of the map side)."""
    aff = np.asarray(affinities)
    _, h, w = aff.shape
    n = h * w
    a = np.zeros((n, n), dtype=dtype)
    src, dst, val = _pairs(h, w, aff, radius)
    a[src, dst] = val
    a[dst, src] = val
    a[np.arange(n), np.arange(n)] = 1.0
    np.power(a, dtype(beta), out=a)
    a /= a.sum(axis=0, keepdims=True)
    return a


def dense_random_walk(values: np.ndarray, affinities: np.ndarray, radius: int = RADIUS,
                      beta: float = BETA, exp_times: int = EXP_TIMES, squaring: bool = True,
                      dtype: type = np.float64) -> np.ndarray:
    """IRN's dense walk: ``T`` squared ``exp_times`` times (``squaring``, as IRN's
    ``to_transition_matrix``), then ``values @ T``; or, with ``squaring=False``, ``2 **
    exp_times`` dense vector-matrix products with the dense ``T``. Float32 result shaped like
    ``values``."""
    x, single = _check(values, affinities, radius, beta, exp_times)
    c, h, w = x.shape
    t = dense_transition(affinities, radius, beta, dtype)
    y = x.reshape(c, h * w).astype(dtype)
    if squaring:
        for _ in range(int(exp_times)):
            t = t @ t
        y = y @ t
    else:
        for _ in range(2 ** int(exp_times)):
            y = y @ t
    out = y.reshape(c, h, w).astype(np.float32)
    return out[0] if single else out


def propagate(cam: np.ndarray, boundary: np.ndarray, radius: int = RADIUS, beta: float = BETA,
              exp_times: int = EXP_TIMES, dense: bool = False) -> np.ndarray:
    """IRN's ``propagate_to_edge``: ``(cam * (1 - boundary)) @ T ** (2 ** exp_times)`` with
    ``T`` from `path_affinities` of ``boundary`` (``cam``: HxW or CxHxW at the boundary map's
    resolution). ``dense=True`` runs `dense_random_walk` instead (small maps only)."""
    b = np.asarray(boundary, dtype=np.float32)
    if b.size and (b.min() < 0 or b.max() > 1 or not np.isfinite(b).all()):
        raise ValueError("boundary must lie in [0, 1]")
    x = np.asarray(cam, dtype=np.float32) * (1.0 - b)
    aff = path_affinities(b, radius)
    walk = dense_random_walk if dense else random_walk
    return walk(x, aff, radius, beta, exp_times)
