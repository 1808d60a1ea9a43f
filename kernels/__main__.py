"""``python -m graywave.kernels``: compile the CPU kernels into Numba's cache (``make install`` runs it).

Numba compiles a kernel the first time a process calls it with new argument types (about 13
CPU-seconds for all of graywave's) and keeps the machine code beside the source (``cache=True``,
in ``kernels/__pycache__``). Every process that calls a kernel before that cache exists compiles
it again: a fresh checkout's wave workers, CLI commands and test processes all at once. Run once,
this leaves them to load it. ``tests/kernels/test_kernels.py`` checks that a wave of every upload
kind and the analytics of every metric then compile nothing."""

from __future__ import annotations

import numpy as np

from graywave.kernels import select_device, warm_up
from graywave.kernels.similarity import METRICS, all_pairs_nearest, check_metric, normalize


def main() -> None:
    warm_up(select_device("cpu"))
    fractions = normalize(np.random.default_rng(0).integers(0, 100, (8, 16)))
    for metric in METRICS:
        all_pairs_nearest(fractions, 2, check_metric(metric))


if __name__ == "__main__":
    main()
