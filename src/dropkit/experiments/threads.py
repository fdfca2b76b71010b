"""A fixed number of torch threads while a comparison trains, so its numbers do not depend on load.

A matrix product or a large reduction split among threads adds its terms in an order set by
the number of threads, so the same run gives different bits with 1 and 2 threads (the weight
gradient of a single run's MLP, ``addmm``, does on a 2-core machine). The number in force is not
only what ``torch.get_num_threads()`` says: with ``OMP_DYNAMIC=true`` the OpenMP runtime gives a
parallel region fewer threads when the load average is high, and the bits change with the load.
One thread has no order to vary, and the default comparison trained 20 times slower with a
second one on a busy 2-core machine (``docs/benchmarks.md``), so
:class:`~dropkit.experiments.CompareConfig` trains with one by default and stores the count
with its configuration: a run with another count is another configuration, never mixed with
these.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["DEFAULT_THREADS", "fixed_threads"]

#: The thread count a comparison trains with unless told otherwise.
DEFAULT_THREADS = 1


@contextmanager
def fixed_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``; the earlier count is restored.

    Args:
        threads: the intra-op thread count, at least 1; ``None`` leaves torch's as it is.

    Warns when ``threads`` is above 1 and ``OMP_DYNAMIC`` is true: OpenMP may then use fewer
    threads on a busy machine, and the numbers change with it.

    Example:
        >>> import torch
        >>> before = torch.get_num_threads()
        >>> with fixed_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"fixed_threads: expected a thread count of at least 1, got {threads!r}")
    if threads > 1 and os.environ.get("OMP_DYNAMIC", "").strip().lower() == "true":
        warnings.warn(
            f"threads={threads} with OMP_DYNAMIC=true: OpenMP may use fewer threads on a busy "
            "machine and the numbers then change; unset OMP_DYNAMIC or use 1 thread",
            RuntimeWarning,
            stacklevel=3,
        )
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
