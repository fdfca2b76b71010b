"""Speed benchmarks: dropkit vs torch, side by side in one process (``dropkit bench`` and the
scripts in ``benchmarks/``), on the public API of dropkit only.

Some train the models of :mod:`dropkit.experiments` on its data sets; the CLI command only
parses and prints. Times on a shared machine are noisy, so every contender is timed in
interleaved rounds (one run of each per round) and the median is kept; what to read are the
ratios within one run.
"""

from dropkit.bench._convert import (
    ConvertRow,
    bench_convert,
    bench_convert_real,
    convert_models,
    real_convert_models,
)
from dropkit.bench._kernels import KernelRow, bench_fused, bench_kernels
from dropkit.bench._mc import bench_mc, mc_cnn
from dropkit.bench._mlp import (
    DrawMaskMultiply,
    LoopRow,
    MlpRow,
    bench_compare_rates,
    bench_mlp,
    bench_training_loop,
    mlp_epochs,
)
from dropkit.bench._timing import Paired, interleaved, median_interval, paired

__all__ = [
    "ConvertRow",
    "DrawMaskMultiply",
    "KernelRow",
    "LoopRow",
    "MlpRow",
    "Paired",
    "bench_compare_rates",
    "bench_convert",
    "bench_convert_real",
    "bench_fused",
    "bench_kernels",
    "bench_mc",
    "bench_mlp",
    "bench_training_loop",
    "convert_models",
    "interleaved",
    "mc_cnn",
    "median_interval",
    "mlp_epochs",
    "paired",
    "real_convert_models",
]
