"""The bundled benchmark behind ``coba-rl bench``: the paper's Table 4 setting and beyond.

One concern per private module; ``__all__`` is the public surface:

* ``_inputs``: pass-rate batches like those of math RLVR;
* ``_baselines``: the paper's heap, as the released allocator runs it;
* ``_timing``: wall-clock and ``tracemalloc`` measurement;
* ``_paper``: DP vs heap vs vectorised greedy at M = 512, B = 8192;
* ``_sweep``: time and peak memory over M (64 to 65,536) and n_up;
* ``_throughput``: tracker ``update()`` rate, save and load;
* ``_report``: ``results.json``, ``results.md``, the log-log plot;
* ``_command``: the ``coba-rl bench`` command.

Absolute times depend on the machine; the ratios measured within one run compare.
"""

from coba_rl.bench._baselines import reference_heap
from coba_rl.bench._inputs import BATCH_KINDS, paper_batch
from coba_rl.bench._machine import machine_info
from coba_rl.bench._paper import PAPER_TABLE4, PaperCase, format_paper_table, run_paper_setting
from coba_rl.bench._sweep import SweepPoint, growth_exponents, run_bounds_sweep, run_size_sweep
from coba_rl.bench._throughput import run_persistence, run_tracker_throughput

__all__ = [
    "BATCH_KINDS",
    "PAPER_TABLE4",
    "PaperCase",
    "SweepPoint",
    "format_paper_table",
    "growth_exponents",
    "machine_info",
    "paper_batch",
    "reference_heap",
    "run_bounds_sweep",
    "run_paper_setting",
    "run_persistence",
    "run_size_sweep",
    "run_tracker_throughput",
]
