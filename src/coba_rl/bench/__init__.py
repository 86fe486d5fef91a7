"""The bundled benchmark behind ``coba-rl bench``: the paper's Table 4 setting and beyond.

One concern per private module; ``__all__`` is the public surface:

* ``_inputs``: pass-rate batches like those of math RLVR;
* ``_baselines``: the paper's heap as released and in plain Python; the table solver;
* ``_timing``: wall-clock and ``tracemalloc`` measurement;
* ``_paper``: DP, both heaps, the table paths and ``allocate`` at M = 512, B = 8192;
* ``_tokens``: ``allocate`` with a token budget against rollout-only, at that setting;
* ``_sweep``: time and peak memory over M (64 to 65,536) and n_up;
* ``_throughput``: tracker ``update()`` rate, save and load;
* ``_scale``: 10^6 distinct pass rates, and n_up = 65,536;
* ``_report``: ``results.json``, ``results.md``, the log-log plot;
* ``_command``: the ``coba-rl bench`` command.

Absolute times depend on the machine; the ratios measured within one run compare.
"""

from coba_rl.bench._baselines import plain_heap, reference_heap, table_allocate
from coba_rl.bench._inputs import BATCH_KINDS, LENGTH_LIMIT, paper_batch, token_batch
from coba_rl.bench._machine import machine_info
from coba_rl.bench._paper import PAPER_TABLE4, PaperCase, format_paper_table, run_paper_setting
from coba_rl.bench._scale import SCALE_CASES, run_scale
from coba_rl.bench._sweep import SweepPoint, growth_exponents, run_bounds_sweep, run_size_sweep
from coba_rl.bench._throughput import run_persistence, run_tracker_throughput
from coba_rl.bench._tokens import TOKEN_CASES, TokenCase, format_token_table, run_token_budget

__all__ = [
    "BATCH_KINDS",
    "LENGTH_LIMIT",
    "PAPER_TABLE4",
    "SCALE_CASES",
    "TOKEN_CASES",
    "PaperCase",
    "SweepPoint",
    "TokenCase",
    "format_paper_table",
    "format_token_table",
    "growth_exponents",
    "machine_info",
    "paper_batch",
    "plain_heap",
    "reference_heap",
    "run_bounds_sweep",
    "run_paper_setting",
    "run_persistence",
    "run_scale",
    "run_size_sweep",
    "run_token_budget",
    "run_tracker_throughput",
    "table_allocate",
    "token_batch",
]
