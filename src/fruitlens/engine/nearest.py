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
    few rows). Fitted on at most `max_rows` evenly spaced rows: the bound holds for any orthonormal
    basis, the sample only decides how tight it is."""
    n, d = vectors.shape
    if d <= 2 * m or n < _MIN_ROWS:
        return None
    sample = vectors[:: -(-n // max_rows)]  # ceil(n / max_rows): at most max_rows rows
    gram = np.zeros((d, d))
    for start in range(0, len(sample), 8192):  # float64 sums, float32 rows: no float64 copy of them all
        block = sample[start : start + 8192].astype(np.float64)
        gram += block.T @ block
    values, axes = np.linalg.eigh(gram)
    basis = axes[:, np.argsort(values)[::-1][:m]]
    return np.ascontiguousarray(basis, np.float32)


class CosineSearch:
    """Top-k dot products of unit queries against fixed rows (unit rows: cosine similarity).

    `basis` (d, m), orthonormal columns: the bound's axes; the rows' coordinates on it and their
    norms outside it are computed here from the rows themselves, so they always describe them. A
    model saves only its basis (`arrays`), and loading recomputes the rest (about 3 GFLOP for 5,950 x 1,992;
    a model loads in the same 0.3-0.4 s as before)."""

    def __init__(self, vectors: np.ndarray, basis: np.ndarray | None = None):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self.basis = None if basis is None else self._checked(np.asarray(basis, np.float32))
        self.coords = self.residual = None
        if self.basis is not None:
            self.coords, self.residual = self._bound_data(self.basis)
        self.rows_compared = 0  # exact products computed so far: what the bound saves, observable

    @classmethod
    def build(cls, vectors: np.ndarray, m: int = BASIS_DIM) -> CosineSearch:
        vectors = np.ascontiguousarray(vectors, np.float32)
        return cls(vectors, principal_basis(vectors, m))

    @property
    def pruned(self) -> bool:
        return self.basis is not None

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The bound's basis, to save beside the vectors (nothing when there is none)."""
        return {} if self.basis is None else {f"{prefix}_basis": self.basis}

    @classmethod
    def from_arrays(cls, vectors: np.ndarray, arrays, prefix: str) -> CosineSearch:
        name = f"{prefix}_basis"
        if name not in arrays:
            return cls(vectors)  # saved before the bound existed: the full product, same answers
        return cls(vectors, arrays[name])

    def _checked(self, basis: np.ndarray) -> np.ndarray:
        """The bound holds only for an orthonormal basis of the vectors' dimension."""
        d = self.vectors.shape[1] if self.vectors.ndim == 2 else -1
        if basis.ndim != 2 or basis.shape[0] != d or not 1 <= basis.shape[1] <= d:
            raise ValueError(
                f"a search basis of shape {basis.shape} does not fit vectors of shape {self.vectors.shape}"
            )
        if not np.isfinite(basis).all() or np.abs(basis.T @ basis - np.eye(basis.shape[1])).max() > 1e-5:
            raise ValueError("the search basis is not orthonormal")
        if not np.isfinite(self.vectors).all():
            raise ValueError("the stored vectors hold NaN or infinite values")
        return np.ascontiguousarray(basis)

    def _bound_data(self, basis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coords = np.empty((len(self.vectors), basis.shape[1]), np.float32)
        residual = np.empty(len(self.vectors), np.float32)
        for start in range(0, len(self.vectors), 8192):  # bounded temporaries
            rows = self.vectors[start : start + 8192]
            part = rows @ basis
            coords[start : start + len(rows)] = part
            residual[start : start + len(rows)] = np.linalg.norm(rows - part @ basis.T, axis=1)
        return coords, residual

    # -- queries ---------------------------------------------------------------------------------
    def best(self, queries: np.ndarray) -> np.ndarray:
        """The largest dot product of each query (rows of unit vectors) with the stored rows."""
        queries = np.asarray(queries, np.float32)
        if len(self.vectors) == 0:
            return np.full(len(queries), -1.0, np.float32)
        if not self.pruned or len(queries) > _BATCH:
            self.rows_compared += len(queries) * len(self.vectors)
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
            self.rows_compared += n
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
            self.rows_compared += n
            return _largest(np.arange(n), self.vectors @ q, k)
        extra = np.setdiff1d(contenders, first, assume_unique=True)
        self.rows_compared += len(first) + len(extra)
        if len(extra):
            rows, values = _largest(np.concatenate([rows, extra]), np.concatenate([values, self.vectors[extra] @ q]), k)
        return rows, values


def _largest(rows: np.ndarray, values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    pick = np.argpartition(-values, k - 1)[:k] if k < len(values) else np.arange(len(values))
    pick = pick[np.argsort(-values[pick], kind="stable")]
    return rows[pick], values[pick]
