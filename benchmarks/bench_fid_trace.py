"""FID's trace term ``Tr((S1 S2)^{1/2})`` at Inception's 2048 dimensions: scipy's ``sqrtm`` (pytorch-fid's way)
against :func:`safediffusion.eval.metrics.frechet_distance` (two symmetric eigendecompositions) and
:func:`~safediffusion.eval.metrics.frechet_distance_of_features` (an ``N1 x N2`` SVD when N < D). Prints the
seconds of each, the speedups, and the largest relative difference of the FID values.

    python benchmarks/bench_fid_trace.py --n 3 200 --dim 2048 --threads 2
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[3, 200], help="images per set")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from scipy import linalg

    from safediffusion.eval.metrics import feature_statistics, frechet_distance, frechet_distance_of_features

    print(f"dim={args.dim} threads={args.threads}")
    print(f"{'n':>5} {'sqrtm s':>9} {'eigh s':>8} {'features s':>11} {'sqrtm/eigh':>11} {'sqrtm/features':>15} "
          f"{'FID':>9} {'max |diff|/FID':>15}")
    for n in args.n:
        rng = np.random.default_rng(n)
        f1, f2 = rng.normal(size=(n, args.dim)), rng.normal(size=(n, args.dim)) + 0.1
        (m1, s1), (m2, s2) = feature_statistics(f1), feature_statistics(f2)
        t = time.perf_counter()
        root = linalg.sqrtm(s1 @ s2)
        root = (root[0] if isinstance(root, tuple) else root).real
        ref = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(root))
        t_sqrtm = time.perf_counter() - t
        t = time.perf_counter()
        eig = frechet_distance(m1, s1, m2, s2)
        t_eig = time.perf_counter() - t
        t = time.perf_counter()
        feat = frechet_distance_of_features(f1, f2)
        t_feat = time.perf_counter() - t
        diff = max(abs(eig - ref), abs(feat - ref))
        print(f"{n:>5} {t_sqrtm:>9.2f} {t_eig:>8.2f} {t_feat:>11.3f} {t_sqrtm / t_eig:>11.1f} "
              f"{t_sqrtm / t_feat:>15.1f} {ref:>9.1f} {diff / ref:>15.1e}")


if __name__ == "__main__":
    main()
