"""Type stub of the compiled permutohedral-lattice module (ext/module.cpp).

Private: use `bench.crf`, which validates inputs. Arrays are C-contiguous NumPy arrays on the
CPU; every function releases the GIL while it computes. ``num_threads=0`` means all hardware
threads. Invalid shapes or parameters raise ValueError; wrong dtypes raise TypeError.
"""

from typing import overload

import numpy as np
import numpy.typing as npt

class Lattice:
    """A permutohedral lattice built once over N points' features.

    ``filter`` applies ``out_i ~= sum_j exp(-|f_i - f_j|^2 / 2) * values_j`` (self term
    included) to (K, N) arrays; the matrix it applies is exactly symmetric.
    """

    @staticmethod
    def from_image(image: npt.NDArray[np.uint8], sigma_xy: float, sigma_rgb: float,
                   num_threads: int = 0) -> Lattice:
        """Lattice over (x, y) / sigma_xy and (r, g, b) / sigma_rgb of an (H, W, 3) image."""
    @staticmethod
    def from_grid(height: int, width: int, sigma_xy: float, num_threads: int = 0) -> Lattice:
        """Lattice over (x, y) / sigma_xy of an H x W pixel grid."""
    @staticmethod
    def from_features(features: npt.NDArray[np.float32], num_threads: int = 0) -> Lattice:
        """Lattice over float32 features of shape (N, D), D in {2, 3, 5}."""
    @overload
    def filter(self, values: npt.NDArray[np.float32],
               num_threads: int = 0) -> npt.NDArray[np.float32]: ...
    @overload
    def filter(self, values: npt.NDArray[np.float64],
               num_threads: int = 0) -> npt.NDArray[np.float64]: ...
    @property
    def dim(self) -> int:
        """Feature dimension D."""
    @property
    def num_pixels(self) -> int:
        """Number of points filtered (N)."""
    @property
    def num_points(self) -> int:
        """Number of lattice vertices."""

@overload
def filter_batch(images: npt.NDArray[np.uint8], values: npt.NDArray[np.float32],
                 sigma_xy: float, sigma_rgb: float,
                 num_threads: int = 0) -> npt.NDArray[np.float32]: ...
@overload
def filter_batch(images: npt.NDArray[np.uint8], values: npt.NDArray[np.float64],
                 sigma_xy: float, sigma_rgb: float,
                 num_threads: int = 0) -> npt.NDArray[np.float64]: ...
def dense_crf(image: npt.NDArray[np.uint8], unary: npt.NDArray[np.float32], gauss_sxy: float,
              gauss_weight: float, bilateral_sxy: float, bilateral_srgb: float,
              bilateral_weight: float, iterations: int,
              num_threads: int = 0) -> npt.NDArray[np.float32]:
    """Mean-field dense CRF (Potts); unary (K, H, W) energies -log p; returns (K, H, W)."""
def clear_cache() -> None:
    """Forget the Gaussian-kernel lattices dense_crf keeps, and free the recycled buffers."""
def pool_bytes() -> int:
    """Bytes of recycled buffers held for the next calls (at most 64 MiB)."""
def cache_size() -> int:
    """Number of Gaussian-kernel lattices dense_crf keeps (by grid size, sxy and weight)."""
def hardware_threads() -> int:
    """Number of hardware threads."""
def lattice_scale(dim: int) -> float:
    """Constant the raw lattice result is multiplied by: sqrt(D+1) * (4*pi/3)^(D/2)."""
