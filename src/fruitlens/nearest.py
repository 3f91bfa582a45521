"""Exact cosine search that reads most stored vectors only through a bound (no Spark).

Used for the novelty check (the nearest reference training image, `engine.PortableModel`) and for
the service's exact neighbour search (`serve.index.NeighbourIndex`). Both used to read every stored
vector for every photo: for a model's 5,950 references of 1,992 values that is a 47 MB
matrix-vector product, memory-bound, longer than the network itself.

The bound. Take an orthonormal basis `B` (d x m) of the stored rows' main directions (their top
principal axes, computed once). Every vector splits into its part in the basis and the rest:
`q = B·qB + q⊥` and `r = B·rB + r⊥`, so

    q·r = qB·rB + q⊥·r⊥ <= qB·rB + |q⊥|·|r⊥|          (Cauchy-Schwarz)

The stored side (`rB`, `|r⊥|`) is computed once; a query then costs one small (n x m) product for
every row's bound, plus exact dot products for the few rows whose bound can still beat the k-th best
exact similarity found. Rows whose bound cannot are skipped: nothing is approximated, the answer
is the brute-force answer (to float32 rounding). When the bound prunes little (a query unlike all
the rows: a photo that is not fruit), it falls back to the full product, so the worst case costs
about what brute force did.
"""

from __future__ import annotations

import numpy as np

BASIS_DIM = 128  # m: the bound's basis. A speed setting only (answers are exact at any m)
MARGIN = 1e-4  # added to every bound: float32 rounding in the bound is ~1e-6
_MIN_ROWS = 1024  # below this, the full product is already cheap
_BATCH = 8  # more queries at once than this: one matrix product (compute-bound, not memory-bound)


def principal_basis(vectors: np.ndarray, m: int = BASIS_DIM, max_rows: int = 50_000) -> np.ndarray | None:
    """The top-m principal axes of the rows (uncentred: the directions of their dot products), as
    a (d, m) float32 orthonormal basis; None where a basis would not cut the work (d <= 2m, or too
    few rows). Fitted on at most `max_rows` evenly spaced rows: the bound holds for any basis, the
    sample only decides how tight it is."""
    n, d = vectors.shape
    if d <= 2 * m or n < _MIN_ROWS:
        return None
    sample = vectors[:: max(1, n // max_rows)].astype(np.float64)
    values, axes = np.linalg.eigh(sample.T @ sample)
    basis = axes[:, np.argsort(values)[::-1][:m]]
    return np.ascontiguousarray(basis, np.float32)


class CosineSearch:
    """Top-k dot products of unit queries against fixed rows (unit rows: cosine similarity).

    `basis`, `coords` (the rows in the basis) and `residual` (each row's norm outside it) are the
    bound's data: pass the three saved with a model, or let `build` compute them."""

    def __init__(self, vectors: np.ndarray, basis: np.ndarray | None = None, coords: np.ndarray | None = None,
                 residual: np.ndarray | None = None):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.basis = basis
        if basis is not None and (coords is None or residual is None):
            coords, residual = self._bound_data(basis)
        self.coords, self.residual = coords, residual
        if basis is not None:
            self._check()

    @classmethod
    def build(cls, vectors: np.ndarray, m: int = BASIS_DIM) -> "CosineSearch":
        vectors = np.ascontiguousarray(vectors, np.float32)
        return cls(vectors, principal_basis(vectors, m))

    @property
    def pruned(self) -> bool:
        return self.basis is not None

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The bound's data, to save beside the vectors (nothing when there is no basis)."""
        if self.basis is None:
            return {}
        return {f"{prefix}_basis": self.basis, f"{prefix}_coords": self.coords, f"{prefix}_residual": self.residual}

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, arrays, prefix: str) -> "CosineSearch":
        names = [f"{prefix}_{part}" for part in ("basis", "coords", "residual")]
        if not all(name in arrays for name in names):
            return cls(vectors)  # saved before the bound existed: the full product, same answers
        return cls(vectors, *(np.asarray(arrays[name], np.float32) for name in names))

    def _bound_data(self, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coords = np.empty((len(self.vectors), basis.shape[1]), np.float32)
        residual = np.empty(len(self.vectors), np.float32)
        for start in range(0, len(self.vectors), 8192):  # bounded temporaries
            rows = self.vectors[start : start + 8192]
            part = rows @ basis
            coords[start : start + len(rows)] = part
            residual[start : start + len(rows)] = np.linalg.norm(rows - part @ basis.T, axis=1)
        return coords, residual

    def _check(self) -> None:
        """The saved bound data must describe these vectors, or the answers could be wrong."""
        n, d = self.vectors.shape
        if self.basis.shape[0] != d or self.coords.shape != (n, self.basis.shape[1]) or self.residual.shape != (n,):
            raise ValueError("the search bound's arrays do not match the vectors")
        rows = np.unique(np.linspace(0, n - 1, min(n, 16)).astype(int)) if n else np.zeros(0, int)
        coords = self.vectors[rows] @ self.basis
        residual = np.linalg.norm(self.vectors[rows] - coords @ self.basis.T, axis=1)
        if not (np.allclose(coords, self.coords[rows], atol=1e-4) and np.allclose(residual, self.residual[rows], atol=1e-4)):
            raise ValueError("the search bound's arrays were not computed from these vectors")

    # -- queries ---------------------------------------------------------------------------------
    def best(self, queries: np.ndarray) -> np.ndarray:
        """The largest dot product of each query (rows of unit vectors) with the stored rows."""
        queries = np.asarray(queries, np.float32)
        if len(self.vectors) == 0:
            return np.full(len(queries), -1.0, np.float32)
        if not self.pruned or len(queries) > _BATCH:
            out = np.full(len(queries), -np.inf, np.float32)
            for start in range(0, len(self.vectors), 8192):  # float32 rows: no copy per call
                out = np.maximum(out, (queries @ self.vectors[start : start + 8192].T).max(axis=1))
            return out
        return np.array([self.top(q, 1)[1][0] for q in queries], np.float32)

    def top(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k rows with the largest dot products with one unit query, best first: (rows, values)."""
        q = np.asarray(query, np.float32).ravel()
        n = len(self.vectors)
        k = min(k, n)
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if not self.pruned or n < _MIN_ROWS:
            return _largest(np.arange(n), self.vectors @ q, k)
        qb = q @ self.basis
        bound = self.coords @ qb
        bound += float(np.linalg.norm(q - self.basis @ qb)) * self.residual + MARGIN
        # Exact values for the rows with the best bounds give a k-th best to beat; only rows whose
        # bound reaches it can be in the answer.
        first = np.argpartition(-bound, min(n, max(4 * k, 64)) - 1)[: max(4 * k, 64)]
        rows, values = _largest(first, self.vectors[first] @ q, k)
        contenders = np.flatnonzero(bound >= values[-1])
        if len(contenders) > n // 4:  # the bound prunes little: the full product is cheaper
            return _largest(np.arange(n), self.vectors @ q, k)
        extra = np.setdiff1d(contenders, first, assume_unique=True)
        if len(extra):
            rows, values = _largest(np.concatenate([rows, extra]),
                                    np.concatenate([values, self.vectors[extra] @ q]), k)
        return rows, values


def _largest(rows: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    pick = np.argpartition(-values, k - 1)[:k] if k < len(values) else np.arange(len(values))
    pick = pick[np.argsort(-values[pick], kind="stable")]
    return rows[pick], values[pick]
