"""Summaries, the Markdown report and the plots of an experiment record (no torch needed).

Everything here reads the JSON-ready record that
:func:`coba_rl.experiment._run.run_experiment` returns (``results.json``), so plots and
tables can be redrawn from a saved run.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from coba_rl.simulate import ALLOCATORS

__all__ = ["format_table", "summarise", "write_markdown", "write_plots"]

_ORDER = ALLOCATORS
_COLORS = {
    "uniform": "#7f7f7f",
    "knapsack-rl": "#1f77b4",
    "coba-paper": "#d62728",
    "coba-release": "#ff7f0e",
    "coba-paper-tokens": "#2ca02c",
}


def _configs(record: dict[str, Any]) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for r in record["runs"]:
        key = (r["allocator"], int(r["budget"]))
        if key not in seen:
            seen.append(key)
    return sorted(seen, key=lambda k: (-k[1], _ORDER.index(k[0]) if k[0] in _ORDER else 99))


def _select(record: dict[str, Any], name: str, budget: int) -> list[dict[str, Any]]:
    return [r for r in record["runs"] if r["allocator"] == name and int(r["budget"]) == budget]


def _ms(x: list[float]) -> tuple[float, float]:
    a = np.asarray(x, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _effective(run: dict[str, Any]) -> float:
    """Share of rollouts in groups with mixed outcomes, over the run."""
    mixed = total = 0
    for s in run["steps"]:
        for n, k in zip(s["counts"], s["successes"], strict=True):
            total += n
            mixed += n if 0 < k < n else 0
    return mixed / total if total else math.nan


def summarise(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (budget, allocator): held-out accuracy start, final, gain, mean over
    the run, tokens and rollouts, the effective-rollout share; mean and std over seeds.

    ``vs_uniform`` is the final accuracy minus uniform GRPO's at the full budget on the
    same seed (same warm start), mean and std over seeds: the paired comparison.
    """
    rows: list[dict[str, Any]] = []
    configs = _configs(record)
    full = max(b for _, b in configs)
    uniform = {r["seed"]: r["heldout_accuracy"][-1] for r in _select(record, "uniform", full)}
    for name, budget in configs:
        runs = _select(record, name, budget)
        acc = [r["heldout_accuracy"] for r in runs]
        paired = [
            r["heldout_accuracy"][-1] - uniform[r["seed"]] for r in runs if r["seed"] in uniform
        ]
        rows.append(
            {
                "allocator": name,
                "budget": budget,
                "lr": runs[0]["lr"],
                "seeds": [r["seed"] for r in runs],
                "heldout_start": _ms([a[0] for a in acc]),
                "heldout_final": _ms([a[-1] for a in acc]),
                "heldout_gain": _ms([a[-1] - a[0] for a in acc]),
                "heldout_mean": _ms([float(np.mean(a[1:])) if len(a) > 1 else a[0] for a in acc]),
                "tokens": _ms([float(r["tokens"][-1]) for r in runs]),
                "rollouts": _ms([float(r["rollouts"][-1]) for r in runs]),
                "effective_ratio": _ms([_effective(r) for r in runs]),
                "vs_uniform": _ms(paired) if len(paired) == len(runs) else None,
            }
        )
    return rows


def _pm(ms: tuple[float, float], factor: float = 100.0, digits: int = 1) -> str:
    return f"{ms[0] * factor:.{digits}f} ± {ms[1] * factor:.{digits}f}"


def format_table(record: dict[str, Any]) -> str:
    """The Markdown results table (accuracies in percent, mean ± std over seeds)."""
    lines = [
        "| budget | allocator | lr | held-out start (%) | held-out final (%) | gain (points) "
        "| final vs uniform, same seed (points) | mean over run (%) | effective rollouts "
        "| rollouts generated | tokens generated |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summarise(record):
        lines.append(
            f"| {row['budget']} | {row['allocator']} | {row['lr']:g} "
            f"| {_pm(row['heldout_start'])} | {_pm(row['heldout_final'])} "
            f"| {_pm(row['heldout_gain'])} "
            f"| {_pm(row['vs_uniform']) if row['vs_uniform'] is not None else 'n/a'} "
            f"| {_pm(row['heldout_mean'])} "
            f"| {_pm(row['effective_ratio'], 1, 3)} | {row['rollouts'][0]:,.0f} "
            f"| {row['tokens'][0]:,.0f} |"
        )
    return "\n".join(lines)


def _tuning_table(record: dict[str, Any]) -> str:
    lines = [
        "| budget | allocator | lr | validation score (%) | chosen |",
        "|---|---|---|---|---|",
    ]
    chosen = {(c["allocator"], c["budget"]): c["lr"] for c in record["chosen_lr"]}
    for t in record["tuning"]:
        mark = "yes" if chosen.get((t["allocator"], t["budget"])) == t["lr"] else ""
        lines.append(
            f"| {t['budget']} | {t['allocator']} | {t['lr']:g} | {t['score'] * 100:.1f} | {mark} |"
        )
    return "\n".join(lines)


def write_markdown(record: dict[str, Any], path: Path, plots: list[Path]) -> Path:
    """Write ``results.md``: the note, machine, versions, settings, both tables and plots."""
    m = record["machine"]
    s = record["settings"]
    warm = record["warm_start"]
    warm_lines = [
        f"- seed {seed}: all pass {w['all_pass'] * 100:.0f} %, mixed {w['mixed'] * 100:.0f} %, "
        f"all fail {w['all_fail'] * 100:.0f} % of training prompts ({w['samples']} samples "
        f"each); mean pass rate by level "
        + ", ".join(f"{k}: {v:.2f}" for k, v in w["by_level"].items() if v is not None)
        for seed, w in warm.items()
    ]
    md = [
        "# Tiny-policy GRPO experiment: rollout allocators on a real sampled policy",
        "",
        f"> {record['note']}",
        "",
        "## Machine",
        "",
        f"- {m['platform']}; {m['processor']}; {m['cpu_count']} logical CPUs; torch threads "
        f"{m['torch_threads']}; load average at start {m['load_average']}, at end "
        f"{record.get('load_average_end')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- wall time: {record['wall_seconds'] / 60:.1f} min",
        "",
        "## Settings",
        "",
        f"- prompts per step M = {s['batch_size']}, uniform group G = {s['group_size']}, "
        f"bounds [{s['n_low']}, {s['n_up']}]; {s['steps']} GRPO steps, held-out evaluation "
        f"every {s['eval_every']}; seeds {', '.join(map(str, s['seeds']))}",
        f"- Adam (betas 0.9, 0.999, eps 1e-8), token-mean loss; learning rate per "
        f"(allocator, budget) from {', '.join(f'{x:g}' for x in s['lr_grid'])}, "
        f"{s['tune_steps']} steps on seed {s['tune_seed']}, scored on the validation split",
        f"- splits: {s['num_train']} training, {s['num_val']} validation, "
        f"{s['num_heldout']} held-out prompts (disjoint)",
        f"- warm start: {s['sft_steps']} supervised steps of {s['sft_batch']} prompts, "
        f"lr {s['sft_lr']:g}; model d={s['d_model']}, {s['n_layers']} layers, "
        f"{s['n_heads']} heads",
        "",
        "Warm-start pass rates (sampled at temperature 1):",
        "",
        *warm_lines,
        "",
        "## Results (held-out greedy accuracy; mean ± std over seeds)",
        "",
        format_table(record),
        "",
        "Effective rollouts: the share of rollouts in groups with mixed outcomes "
        "(0 < k < n), which are the only ones with a GRPO gradient.",
        "",
        "## Learning-rate search",
        "",
        _tuning_table(record),
    ]
    if plots:
        md += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    path.write_text("\n".join(md) + "\n", encoding="utf-8")
    return path


def write_plots(record: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw ``exp_accuracy.png`` and ``exp_allocation.png``; ``[]`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "matplotlib is not installed: skipping plots (pip install 'coba-rl[plot]')",
            file=sys.stderr,
        )
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = _configs(record)
    full = max(b for _, b in configs)
    written: list[Path] = []
    fig, all_axes = plt.subplots(1, 4, figsize=(19, 4.2))
    axes = all_axes[:3]
    ax_d = all_axes[3]
    base = {r["seed"]: np.array(r["heldout_accuracy"]) for r in _select(record, "uniform", full)}
    for name, budget in configs:
        runs = _select(record, name, budget)
        acc = np.array([r["heldout_accuracy"] for r in runs]) * 100
        mean, std = acc.mean(axis=0), acc.std(axis=0)
        label = f"{name} B={budget}"
        style = "-" if budget == full else "--"
        xs = [
            np.array(runs[0]["eval_steps"]),
            np.array(runs[0]["rollouts"]),
            np.mean([r["tokens"] for r in runs], axis=0),
        ]
        for ax, x in zip(axes, xs, strict=True):
            ax.plot(x, mean, style, color=_COLORS.get(name, "k"), label=label, lw=1.5)
            ax.fill_between(x, mean - std, mean + std, color=_COLORS.get(name, "k"), alpha=0.15)
        if (
            base
            and all(r["seed"] in base for r in runs)
            and not (name == "uniform" and budget == full)
        ):
            diff = np.array([np.array(r["heldout_accuracy"]) - base[r["seed"]] for r in runs]) * 100
            dm, ds = diff.mean(axis=0), diff.std(axis=0)
            ax_d.plot(xs[0], dm, style, color=_COLORS.get(name, "k"), label=label, lw=1.5)
            ax_d.fill_between(xs[0], dm - ds, dm + ds, color=_COLORS.get(name, "k"), alpha=0.12)
    for ax, xl in zip(axes, ("GRPO step", "rollouts generated", "tokens generated"), strict=True):
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
        ax.set_ylim(axes[0].get_ylim())
    axes[0].set_ylabel("held-out accuracy (%)")
    ax_d.axhline(0.0, color=_COLORS["uniform"], lw=1.0)
    ax_d.set_xlabel("GRPO step")
    ax_d.set_ylabel(f"minus uniform B={full}, same seed (points)")
    ax_d.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower right")
    seeds = sorted({r["seed"] for r in record["runs"]})
    fig.suptitle(f"Tiny transformer, GRPO + Adam: held-out accuracy, mean ± std over seeds {seeds}")
    fig.tight_layout()
    p = out_dir / "exp_accuracy.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)

    full_cfgs = [c for c in configs if c[1] == full]
    n_up = int(record["settings"]["n_up"])
    edges = np.unique(np.round(np.geomspace(1, n_up + 1, 9)).astype(int))
    fig, axes = plt.subplots(
        1,
        len(full_cfgs),
        figsize=(3.4 * len(full_cfgs) + 1.2, 3.6),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, (name, budget) in zip(axes[0], full_cfgs, strict=True):
        runs = _select(record, name, budget)
        steps = len(runs[0]["steps"])
        hist = np.zeros((len(edges) - 1, steps))
        for r in runs:
            for t, s in enumerate(r["steps"]):
                hist[:, t] += np.histogram(s["counts"], bins=edges)[0]
        hist /= np.maximum(hist.sum(axis=0, keepdims=True), 1)
        image = ax.imshow(hist, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                          interpolation="nearest",
                          extent=(0.5, steps + 0.5, -0.5, len(edges) - 1.5))  # fmt: skip
        ax.set_yticks(range(len(edges) - 1))
        ax.set_yticklabels([f"{lo}-{hi - 1}" for lo, hi in itertools.pairwise(edges)],
                           fontsize=7)  # fmt: skip
        ax.set_title(f"{name}, B={budget}", fontsize=9)
        ax.set_xlabel("GRPO step")
    axes[0][0].set_ylabel("rollouts given to a prompt")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85, label="share of prompts")
    fig.suptitle("Allocation histogram over training (pooled over seeds)", fontsize=10)
    p = out_dir / "exp_allocation.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    written.append(p)
    return written
