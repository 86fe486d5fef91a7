"""Benchmark results as files: ``results.json``, ``results.md`` and the log-log plot.

:func:`format_markdown` renders the JSON-ready results alone, so the Markdown can be
rebuilt from a saved ``results.json``. :func:`update_docs` splices it into a document
between two marker lines and copies the plot beside it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "DOCS_BEGIN",
    "DOCS_END",
    "PLOT_NAME",
    "format_markdown",
    "plot_sweep",
    "summary_lines",
    "targets",
    "targets_missed",
    "update_docs",
    "write_results",
]

PLOT_NAME = "bench_sweep.png"
DOCS_BEGIN = "<!-- coba-rl bench results: begin -->"
DOCS_END = "<!-- coba-rl bench results: end -->"
#: "Well under a second" for the tracker target.
TRACKER_TARGET_S = 0.25
#: Growth exponent in M (or in n_up - n_low) counted as "about linear or better".
LINEAR_EXPONENT = 1.2
#: The paper's-setting targets, each scored on every batch kind.
PAPER_TARGETS = {
    "released": ">= 1000x over the released heap at the paper's setting (every batch kind)",
    "plain": ">= 500x over the plain-Python heap at the paper's setting (every batch kind)",
    "table": "allocate no slower than with the gain-table solver at the paper's setting "
    "(every batch kind)",
}
#: The token-budget target: every case's median within this factor of rollout-only ``allocate``.
TOKEN_RATIO = 2.0
TOKEN_TARGET = (
    f"token-budget allocate within {TOKEN_RATIO:g}x of rollout-only allocate at the paper's "
    "setting (every case)"
)
#: The sweep size of the large-M target and its limit (seconds).
LARGE_M = 65536
LARGE_M_TARGET_S = 0.020
#: Per scale case: (seconds or None, megabytes of extra peak memory).
SCALE_TARGETS: dict[str, tuple[float | None, float]] = {
    "distinct": (1.0, 300.0),
    "wide bounds": (None, 100.0),
}
#: Save and load of 10^6 tracked prompts, each (seconds).
PERSIST_TARGET_S = 2.0
SWEEP_ORDER = ("allocate", "greedy (table)", "heap (table)", "reference heap", "dp")


def _ms(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.3g} ms"


def _mb(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 1e6:.3g}"


def _yes(flag: bool | None) -> str:
    return {True: "yes", False: "NO", None: "-"}[flag]


def _row(target: str, measured: str, met: bool | None) -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": met}


def _ratio_row(
    cases: list[dict[str, Any]], baseline: str, path: str, floor: float, target: str
) -> dict[str, Any] | None:
    """``baseline / path`` (medians) on every case; met when every case reaches ``floor``."""
    have = [c for c in cases if baseline in c["paths"] and path in c["paths"]]
    if not have:
        return None
    ratios = {c["case"]: c["paths"][baseline]["median"] / c["paths"][path]["median"] for c in have}
    fmt = "{:.2f}x" if floor < 10 else "{:.0f}x"
    measured = ", ".join(f"{fmt.format(r)} ({case})" for case, r in ratios.items())
    return _row(target, measured, min(ratios.values()) >= floor)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target, stated once, scored on every case it names, with the measured figure.

    ``met`` is ``True``, ``False``, or ``None`` where this run did not measure the target
    (a smaller ``--sizes`` or ``--tracker-sizes``, or a stage left out).
    """
    rows: list[dict[str, Any]] = []
    paper = results.get("paper_setting")
    if paper:
        cases = paper["cases"]
        for args in (
            ("reference heap", "allocate", 1000.0, PAPER_TARGETS["released"]),
            ("plain heap", "allocate", 500.0, PAPER_TARGETS["plain"]),
            ("allocate (table)", "allocate", 1.0, PAPER_TARGETS["table"]),
        ):
            row = _ratio_row(cases, *args)
            if row:
                rows.append(row)
        first = cases[0]
        dp_times = [c["paths"]["dp"]["median"] for c in cases if "dp" in c["paths"]]
        if dp_times:
            ref = first["paths"]["reference heap"]["median"]
            dp_first = first["paths"].get("dp", {}).get("median")
            ratio = (
                f"; DP / paper's heap {dp_first / ref:.1f}x ({first['case']})" if dp_first else ""
            )
            rows.append(
                _row(
                    "the DP in seconds at the paper's setting (every batch kind)",
                    f"{max(dp_times):.2f} s (slowest case){ratio}",
                    max(dp_times) < 10.0,
                )
            )
    token = results.get("token_budget")
    if token and token["cases"]:
        ratios = {c["case"]: c["ratio"] for c in token["cases"]}
        rows.append(
            _row(
                TOKEN_TARGET,
                ", ".join(f"{r:.2f}x ({case})" for case, r in ratios.items()),
                max(ratios.values()) <= TOKEN_RATIO,
            )
        )
    sweep = results.get("sweep")
    if sweep:
        big = [p for p in sweep["points"] if p["m"] == LARGE_M]
        times = {p["kind"]: p["paths"].get("allocate", {}).get("median") for p in big}
        measured = ", ".join(
            f"{_ms(t)} ({kind})" if t is not None else f"not run ({kind})"
            for kind, t in times.items()
        )
        met = None
        if times:
            met = all(t is not None and t <= LARGE_M_TARGET_S for t in times.values())
        rows.append(
            _row(
                f"allocate at M = {LARGE_M:,}, B = 16 M, [2, 128] in <= "
                f"{LARGE_M_TARGET_S * 1e3:.0f} ms (every batch kind)",
                measured or f"not measured (M = {LARGE_M:,} not in --sizes)",
                met,
            )
        )
    growth = results.get("sweep", {}).get("growth_in_m", {})
    bounds = results.get("bounds_sweep", {}).get("growth_in_k", {})
    exps = [(f"{kind}, in M", g.get("allocate")) for kind, g in growth.items()] + [
        (f"{kind}, in n_up - n_low", g.get("allocate")) for kind, g in bounds.items()
    ]
    exps = [(k, e) for k, e in exps if e is not None]
    if exps:
        rows.append(
            _row(
                "allocate's cost about linear in M x (n_up - n_low) or better "
                f"(exponent <= {LINEAR_EXPONENT}, every batch kind)",
                "exponent " + ", ".join(f"{e:.2f} ({k})" for k, e in exps),
                all(e <= LINEAR_EXPONENT for _, e in exps),
            )
        )
    for case in results.get("scale", []):
        rows.append(_scale_row(case))
    tracker = results.get("tracker", {}).get("throughput", [])
    big_t = [r for r in tracker if r["rollouts_per_step"] >= 10**6]
    if tracker:
        if big_t:
            r = big_t[-1]
            worst = max(r["median_s_new_ids"], r["median_s_seen_ids"])
            measured = (
                f"{worst:.3f} s per step (median, slower phase); "
                f"{r['rollouts_per_s'] / 1e6:.1f} M rollouts/s"
            )
            met_t: bool | None = worst <= TRACKER_TARGET_S
        else:
            measured, met_t = "not measured (--tracker-sizes below 10^6)", None
        rows.append(
            _row(
                f"tracker update of 10^6 rollouts in <= {TRACKER_TARGET_S} s",
                measured,
                met_t,
            )
        )
    per = results.get("tracker", {}).get("persistence")
    if per:
        if per["tracked_prompts"] >= 10**6:
            worst_io = max(per["save_s"], per["load_s"])
            measured = (
                f"save {_ms(per['save_s'])}, load {_ms(per['load_s'])} "
                f"({per['tracked_prompts']:,} prompts)"
            )
            met_io: bool | None = worst_io <= PERSIST_TARGET_S
        else:
            measured, met_io = f"not measured ({per['tracked_prompts']:,} prompts tracked)", None
        rows.append(
            _row(
                f"save and load at 10^6 prompts each in <= {PERSIST_TARGET_S:g} s",
                measured,
                met_io,
            )
        )
    return rows


def _scale_row(case: dict[str, Any]) -> dict[str, Any]:
    """The target row of one scale case (see ``coba_rl.bench._scale``)."""
    limit_s, limit_mb = SCALE_TARGETS[case["case"]]
    what = (
        f"allocate with {case['distinct']:,} distinct pass rates, M = {case['m']:,}, "
        f"n_up = {case['n_up']:,}, B = 16 M: "
    )
    parts = []
    if limit_s is not None:
        parts.append(f"<= {limit_s:g} s")
    parts.append(f"<= {limit_mb:g} MB extra peak memory, no MemoryError")
    if case["error"]:
        return _row(what + " and ".join(parts), case["error"], False)
    ok = case["peak_bytes"] is not None and case["peak_bytes"] <= limit_mb * 1e6
    if limit_s is not None:
        ok = ok and case["median_s"] <= limit_s
    measured = f"{_ms(case['median_s'])} (median), {_mb(case['peak_bytes'])} MB peak"
    return _row(what + " and ".join(parts), measured, ok)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """The closing lines: which targets were missed or not measured, and the agreement."""
    rows = targets(results)
    missed = [r["target"] for r in rows if r["met"] is False]
    unmeasured = [r["target"] for r in rows if r["met"] is None]
    lines = [
        "Targets missed: " + ("none" if not missed else "; ".join(missed)) + ".",
    ]
    if unmeasured:
        lines.append("Targets not measured in this run: " + "; ".join(unmeasured) + ".")
    lines.append(
        "Agreement (identical counts, DP objective, state round trip, token and rollout "
        "budgets and bounds held): "
        + ("all passed." if results["ok"] else "FAILED (see DISAGREEMENT and NO above).")
    )
    return lines


def targets_missed(results: dict[str, Any]) -> list[str]:
    """The targets this run measured and missed (what ``coba-rl bench --check`` fails on)."""
    return [r["target"] for r in targets(results) if r["met"] is False]


def _sweep_tables(points: list[dict[str, Any]], label: str, key: str) -> list[str]:
    lines: list[str] = []
    for kind in dict.fromkeys(p["kind"] for p in points):
        mine = [p for p in points if p["kind"] == kind]
        paths = [k for k in SWEEP_ORDER if any(k in p["paths"] or k in p["skipped"] for p in mine)]
        head = f"| {label} | " + " | ".join(paths) + " |"
        lines += [f"Time (median; {kind} pass rates):", "", head]
        lines.append("|---:|" + "---:|" * len(paths))
        for p in mine:
            cells = [_ms(p["paths"][k]["median"]) if k in p["paths"] else "skipped" for k in paths]
            lines.append(f"| {p[key]} | " + " | ".join(cells) + " |")
        lines += ["", f"Peak traced memory (MB; {kind} pass rates):", "", head]
        lines.append("|---:|" + "---:|" * len(paths))
        for p in mine:
            cells = [_mb(p["paths"][k]["peak_bytes"]) if k in p["paths"] else "-" for k in paths]
            lines.append(f"| {p[key]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def format_markdown(results: dict[str, Any]) -> str:
    """The whole results section (Markdown) from the JSON-ready ``results``."""
    info = results["machine"]
    settings = results["settings"]
    lines = [
        f"Measured by `{settings['command']}` on {results['created']}: {info['cpu']}, "
        f"{info['cores']} logical cores, {info['platform']}; Python {info['python']}, "
        f"numpy {info['numpy']}, scipy {info['scipy']}, coba-rl {info['coba_rl']}. "
        f"Total run time {results['elapsed_s']:.0f} s. Absolute times depend on the "
        "machine (and on its load); the ratios, measured within one run, are what compares.",
        "",
        "### Targets",
        "",
        "Each target applies to every case it names; `-` marks one this run did not measure.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for row in targets(results):
        lines.append(f"| {row['target']} | {row['measured']} | {_yes(row['met'])} |")
    paper = results.get("paper_setting")
    if paper:
        s = paper["setting"]
        lines += [
            "",
            f"### The paper's setting (M = {s['m']}, B = {s['budget']}, "
            f"[n_low, n_up] = [{s['n_low']}, {s['n_up']}])",
            "",
            paper["table"],
        ]
    token = results.get("token_budget")
    if token:
        s = token["setting"]
        lines += [
            "",
            f"### Token budgets (M = {s['m']}, B = {s['budget']}, "
            f"[n_low, n_up] = [{s['n_low']}, {s['n_up']}])",
            "",
            token["table"],
        ]
    sweep = results.get("sweep")
    if sweep:
        cfg = sweep["settings"]
        lines += [
            "",
            f"### Sweep over M (B = 16 M, [n_low, n_up] = [{cfg['n_low']}, {cfg['n_up']}])",
            "",
            f"Up to {cfg['reps']} calls per path and size (fewer once {cfg['rep_budget_s']:g} s "
            f"is spent); a path is skipped once its extrapolated time passes "
            f"{cfg['cap_s']:g} s. Peak memory: the `tracemalloc` peak of one extra call "
            f"(Python objects and numpy buffers), traced when the call takes at most "
            f"{cfg['memory_cap_s']:g} s.",
            "",
        ]
        lines += _sweep_tables(sweep["points"], "M", "m")
        lines += _agreement(sweep["points"], "m", "M")
        lines += [
            "",
            "Growth exponent of the fastest time in M (fit over M >= 1024; 1 = linear):",
            "",
        ]
        lines += _growth_table(sweep["growth_in_m"])
    bounds = results.get("bounds_sweep")
    if bounds:
        lines += [
            "",
            f"### Sweep over n_up (M = {bounds['settings']['m']}, B = 16 M, n_low = 2)",
            "",
        ]
        lines += _sweep_tables(bounds["points"], "n_up", "n_up")
        lines += _agreement(bounds["points"], "n_up", "n_up")
        lines += ["", "Growth exponent of the fastest time in n_up - n_low:", ""]
        lines += _growth_table(bounds["growth_in_k"])
    tracker = results.get("tracker")
    if tracker:
        lines += [
            "",
            "### Tracker",
            "",
            "`CoBAAllocator.update()` per step, 16 rollouts per prompt, dataset indices as "
            "ids; an epoch of 16 steps on new ids, then one on seen ids:",
            "",
            "| rollouts / step | prompts / step | median, new ids | median, seen ids "
            "| slowest step | rollouts / s | tracked prompts | tracker memory (MB) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in tracker["throughput"]:
            lines.append(
                f"| {r['rollouts_per_step']:,} | {r['prompts_per_step']:,} | "
                f"{_ms(r['median_s_new_ids'])} | {_ms(r['median_s_seen_ids'])} | "
                f"{_ms(r['max_s'])} | {r['rollouts_per_s'] / 1e6:.1f} M | "
                f"{r['tracked_prompts']:,} | {_mb(r['tracker_nbytes'])} |"
            )
        per = tracker.get("persistence")
        if per:
            lines += [
                "",
                "| tracked prompts | window | save (JSON) | load (validated) | file (MB) "
                "| arrays in memory (MB) | round trip identical |",
                "|---:|---:|---:|---:|---:|---:|---|",
                f"| {per['tracked_prompts']:,} | {per['window']} | {_ms(per['save_s'])} | "
                f"{_ms(per['load_s'])} | {_mb(per['file_bytes'])} | "
                f"{_mb(per['tracker_nbytes'])} | {_yes(per['round_trip_identical'])} |",
            ]
    scale = results.get("scale")
    if scale:
        lines += [
            "",
            "### Scale",
            "",
            "`allocate` end to end, every pass rate distinct, B = 16 M, n_low = 2; peak "
            "memory is the `tracemalloc` peak of one extra call:",
            "",
            "| case | M | distinct rates | n_up | median | fastest | peak memory (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in scale:
            if c["error"]:
                cells = f"{c['error']} | - | -"
            else:
                cells = f"{_ms(c['median_s'])} | {_ms(c['min_s'])} | {_mb(c['peak_bytes'])}"
            lines.append(
                f"| {c['case']} | {c['m']:,} | {c['distinct']:,} | {c['n_up']:,} | {cells} |"
            )
    lines += ["", *summary_lines(results)]
    return "\n".join(lines) + "\n"


def _agreement(points: list[dict[str, Any]], key: str, label: str) -> list[str]:
    bad = [p for p in points if not p["counts_identical"] or p["dp_objective_equal"] is False]
    dp_runs = sum(p["dp_objective_equal"] is not None for p in points)
    if not bad:
        dp_note = (
            f"; the DP reached the greedy's objective in all {dp_runs} runs" if dp_runs else ""
        )
        return [f"Every path that ran gave identical counts at every {label}{dp_note}.", ""]
    where = ", ".join(f"{p['kind']} {label}={p[key]}" for p in bad)
    return [f"DISAGREEMENT at {where}.", ""]


def _growth_table(growth: dict[str, dict[str, float | None]]) -> list[str]:
    paths = [k for k in SWEEP_ORDER if any(k in g for g in growth.values())]
    lines = ["| pass rates | " + " | ".join(paths) + " |", "|---|" + "---:|" * len(paths)]
    for kind, g in growth.items():
        cells = ["-" if g.get(k) is None else f"{g[k]:.2f}" for k in paths]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return lines


def plot_sweep(points: list[dict[str, Any]], path: Path) -> bool:
    """Log-log plot of median time against M, one line per path, a panel per kind.

    Returns ``False`` (and draws nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    kinds = list(dict.fromkeys(p["kind"] for p in points))
    fig, axes = plt.subplots(
        1, len(kinds), figsize=(5.2 * len(kinds), 4.4), sharey=True, squeeze=False
    )
    markers = dict(zip(SWEEP_ORDER, "os^Dv", strict=True))
    for ax, kind in zip(axes[0], kinds, strict=True):
        mine = [p for p in points if p["kind"] == kind]
        for path_name in SWEEP_ORDER:
            xy = [
                (p["m"], p["paths"][path_name]["median"]) for p in mine if path_name in p["paths"]
            ]
            if xy:
                xs, ys = zip(*xy, strict=True)
                ax.loglog(xs, ys, marker=markers[path_name], label=path_name)
        guide = [
            (p["m"], p["paths"]["greedy (table)"]["median"])
            for p in mine
            if "greedy (table)" in p["paths"]
        ]
        if guide:
            # A dotted slope-1 line through the greedy's largest point: linear growth.
            m_last, t_last = guide[-1]
            ms = [p["m"] for p in mine]
            ax.loglog(ms, [t_last * m / m_last for m in ms], "k:", lw=1, label="∝ M (guide)")
        ax.set_title(f"{kind} pass rates, B = 16 M, [2, 128]")
        ax.set_xlabel("prompts per batch M")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("median time per call (s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("CoBA-RL allocation cost (absolute times depend on the machine)", fontsize=10)
    fig.tight_layout(rect=(0.0, 0.07, 1.0, 1.0))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_results(out: Path, results: dict[str, Any], markdown: str) -> dict[str, Path]:
    """Write ``results.json`` and ``results.md`` into ``out`` (created if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown, encoding="utf-8")
    return paths


def update_docs(doc: Path, markdown: str, plot: Path | None) -> None:
    """Replace the text between :data:`DOCS_BEGIN` and :data:`DOCS_END` in ``doc``.

    Copies ``plot`` (if given) to ``figures/bench_sweep.png`` beside ``doc``.

    Raises:
      ValueError: ``doc`` lacks the two marker lines, in that order.
    """
    text = doc.read_text(encoding="utf-8")
    start, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if start < 0 or end < start:
        raise ValueError(
            f"{doc} must contain the lines {DOCS_BEGIN!r} and then {DOCS_END!r} "
            "around the results section"
        )
    head = text[: start + len(DOCS_BEGIN)]
    doc.write_text(f"{head}\n\n{markdown}\n{text[end:]}", encoding="utf-8")
    if plot is not None:
        figures = doc.parent / "figures"
        figures.mkdir(exist_ok=True)
        shutil.copyfile(plot, figures / PLOT_NAME)
