"""Hydra entry points and everything that turns runs into numbers and reports.

One BLAS/OpenMP thread by default (before numpy loads): on small shared machines two threads
collapse under contention. Set OMP_NUM_THREADS etc. yourself to override.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")



def setup_torch(threads: int) -> None:
    """One place for the torch thread count of an entry point."""
    import torch

    torch.set_num_threads(threads)
