"""Turn result rows into ``results.md`` (tables, ratios, targets) and one PNG per benchmark.

Every metric is lower-is-better, so "x X" below 1 means better than X. A ratio compares medians,
except between two rows measured in turns by one ``interleaved`` call (one ``round_group``): those
are compared round by round, and the ratio is the median of the per-round ratios (see ``paired``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .harness import FLOOR, OURS, PEER, Row
from .machine import one_line
from .registry import BY_NAME

# -- lookups -------------------------------------------------------------------------------------


def _ordered(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def subjects_of(rows: list[Row]) -> list[str]:
    """Subjects in display order: the floor, then peers, then threadstore."""
    rank = {FLOOR: 0, PEER: 1, OURS: 2}
    first = _ordered(r["subject"] for r in rows)
    role = {r["subject"]: r["role"] for r in rows}
    return sorted(first, key=lambda s: (rank.get(role[s], 3), first.index(s)))


class Lookup:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self._by = {(r["benchmark"], r["subject"], r["op"]): r for r in rows}

    def row(self, bench: str, subject: str, op: str) -> Row | None:
        return self._by.get((bench, subject, op))

    def value(self, bench: str, subject: str, op: str) -> float | None:
        row = self.row(bench, subject, op)
        return None if row is None else row["median"]

    def ratio(
        self, bench: str, subject: str, op: str, ref: str, ref_op: str | None = None
    ) -> float | None:
        """``subject``'s ``op`` against ``ref``'s ``ref_op`` (the same op by default)."""
        a, b = self.row(bench, subject, op), self.row(bench, ref, ref_op or op)
        if a is None or b is None:
            return None
        return paired(a, b)

    def why_na(self, bench: str, subject: str, op: str) -> str:
        row = self.row(bench, subject, op)
        if row is None:
            return f"{bench} not run"
        reason: str = row["extra"].get("na", "no value")
        return reason


# -- number formatting ---------------------------------------------------------------------------


def fmt(x: float | None) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if abs(x) >= 1 else f"{x:.3f}".rstrip("0").rstrip(".") or "0"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def paired(a: Row, b: Row) -> float | None:
    """Row ``a`` against row ``b``: the median of their per-round ratios when both come from one
    ``interleaved`` call (the rounds were taken side by side, so a slow phase of the machine hits
    both sides of a ratio), else the ratio of their medians."""
    group = a.get("round_group")
    xs, ys = a["samples"], b["samples"]
    if group is not None and group == b.get("round_group") and len(xs) == len(ys) and all(ys):
        return statistics.median(x / y for x, y in zip(xs, ys, strict=True))
    return ratio(a["median"], b["median"])


def fmt_ratio(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}x"


UNIT_SHORT = {"µs/op": "µs", "ms": "ms", "bytes/key": "B/key"}


def cell(row: Row) -> str:
    if row["median"] is None:
        return f"n/a: {row['extra'].get('na', '')}"
    unit = UNIT_SHORT.get(row["unit"], row["unit"])
    if row["reps"] > 1 and row["min"] != row["max"]:
        return f"{fmt(row['median'])} {unit} ({fmt(row['min'])}-{fmt(row['max'])})"
    return f"{fmt(row['median'])} {unit}"


# -- tables --------------------------------------------------------------------------------------


def group_table(bench: str, rows: list[Row]) -> list[str]:
    subjects = subjects_of(rows)
    role = {r["subject"]: r["role"] for r in rows}
    floor = next((s for s in subjects if role[s] == FLOOR), None)
    peers = [s for s in subjects if role[s] == PEER]
    look = Lookup(rows)
    header = ["operation", "subject", "median (min-max)"]
    if floor:
        header.append("x floor")
    header += [f"x {p}" for p in peers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    # A subject that is n/a for every operation, for one reason, gets one line.
    all_na: dict[str, str] = {}
    for s in subjects:
        srows = [r for r in rows if r["subject"] == s]
        reasons = {r["extra"].get("na") for r in srows}
        if all(r["median"] is None for r in srows) and len(reasons) == 1:
            all_na[s] = str(reasons.pop())

    for op in _ordered(r["op"] for r in rows):
        for s in subjects:
            if s in all_na:
                continue
            row = look.row(bench, s, op)
            if row is None:
                continue
            cells = [op, f"**{s}**" if role[s] == OURS else s, cell(row)]
            if floor:
                cells.append(fmt_ratio(look.ratio(bench, s, op, floor)))
            for p in peers:
                cells.append("" if p == s else fmt_ratio(look.ratio(bench, s, op, p)))
            lines.append("| " + " | ".join(cells) + " |")
    for s, reason in all_na.items():
        cells = ["(all)", f"**{s}**" if role[s] == OURS else s, f"n/a: {reason}"]
        cells += [""] * (len(header) - 3)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# -- targets -------------------------------------------------------------------------------------


@dataclass
class Verdict:
    target: str
    measured: str
    verdict: str  # "met", "missed", "n/a"


Part = tuple[str, float | None, str, str]
"""(label, measured value or None, reason when None, unit suffix such as "x" or " ms")."""


def _check(target: str, parts: list[Part], ok: Callable[[float], bool]) -> Verdict:
    texts = []
    verdicts = []
    for label, value, reason, suffix in parts:
        if value is None:
            texts.append(f"{label}: n/a ({reason})")
            verdicts.append("n/a")
        else:
            shown = f"{value:.2f}" if suffix == "x" else fmt(value)
            texts.append(f"{label}: {shown}{suffix}")
            verdicts.append("met" if ok(value) else "missed")
    if "missed" in verdicts:
        verdict = "missed"
    elif "n/a" in verdicts:
        verdict = "n/a" if "met" not in verdicts else "partly n/a"
    else:
        verdict = "met"
    return Verdict(target, "; ".join(texts), verdict)


def _ratio_part(
    look: Lookup, label: str, bench: str, subject: str, op: str, ref: str, ref_op: str | None = None
) -> Part:
    r = look.ratio(bench, subject, op, ref, ref_op)
    a = look.value(bench, subject, op)
    reason = look.why_na(bench, subject, op) if a is None else look.why_na(bench, ref, ref_op or op)
    return (label, r, reason, "x")


def targets(rows: list[Row]) -> list[Verdict]:
    look = Lookup(rows)
    out: list[Verdict] = []
    mem, floor, ttlc = "threadstore memory", "floor dict+Lock", "cachetools TTLCache+Lock"
    threads = ("1 thread", "4 threads")

    out.append(
        _check(
            "memory get hit ≤ 1.5x floor (original: 1.95x)",
            [_ratio_part(look, t, "kv_memory", mem, f"get hit, {t}", floor) for t in threads],
            lambda r: r <= 1.5,
        )
    )
    out.append(
        _check(
            "memory set ≤ 2.0x floor (original: 1.9x)",
            [_ratio_part(look, t, "kv_memory", mem, f"set 2 KB, {t}", floor) for t in threads],
            lambda r: r <= 2.0,
        )
    )
    # One line per row: the collector-off row is the method of every other row; the collector-on
    # row is stricter (each entry is a tuple the collector looks at, the floor stores bare str).
    for when, op in (
        ("", "insert new key 2 KB, 1 thread"),
        (", collector on", "insert new key 2 KB, 1 thread, collector on"),
    ):
        for target, ref, ok in (
            ("≤ 2.0x floor", floor, lambda r: r <= 2.0),
            ("no slower than the original", "original design", lambda r: r <= 1.0),
            ("faster than TTLCache+Lock", ttlc, lambda r: r < 1.0),
        ):
            part = _ratio_part(look, "1 thread", "kv_memory", mem, op, ref)
            out.append(_check(f"memory insert of a new key{when} {target}", [part], ok))
    out.append(
        _check(
            "memory faster than TTLCache+Lock on every op (ratio < 1)",
            [
                _ratio_part(look, f"{op} {t}", "kv_memory", mem, f"{op}, {t}", ttlc)
                for t in threads
                for op in ("get hit", "get miss", "set 2 KB")
            ],
            lambda r: r < 1.0,
        )
    )
    pauses: list[Part] = []
    for op in ("longest reader op", "longest lock hold"):
        v = look.value("expiry_1m", "threadstore memory", op)
        pauses.append((op, v, look.why_na("expiry_1m", "threadstore memory", op), " ms"))
    orig = look.value("expiry_1m", "original design", "longest lock hold")
    out.append(
        _check(
            "longest pause from expiry, 1M keys half expired, < 1 ms"
            + (f" (original: {fmt(orig)} ms measured)" if orig is not None else ""),
            pauses,
            lambda v: v < 1.0,
        )
    )
    parts: list[Part] = []
    for op in ("overhead (tracemalloc)", "overhead (RSS)"):
        v = look.value("memory_per_key", mem, op)
        parts.append((op, v, look.why_na("memory_per_key", mem, op), " B/key"))
    orig = look.value("memory_per_key", "original design", "overhead (tracemalloc)")
    out.append(
        _check(
            "memory overhead ≤ 350 bytes/key at 100k x 4 KB"
            + (f" (original: {fmt(orig)} B/key measured)" if orig is not None else ""),
            parts,
            lambda v: v <= 350,
        )
    )
    sq, raw_sq = "threadstore sqlite", "raw sqlite3"
    out.append(
        _check(
            "SQLite set ≤ 1.3x raw sqlite3 autocommit INSERT OR REPLACE",
            [_ratio_part(look, t, "kv_sqlite", sq, f"set 2 KB, {t}", raw_sq) for t in threads],
            lambda r: r <= 1.3,
        )
    )
    out.append(
        _check(
            "SQLite get ≤ 1.3x raw SELECT",
            [
                _ratio_part(look, f"{op} {t}", "kv_sqlite", sq, f"{op}, {t}", raw_sq)
                for t in threads
                for op in ("get hit", "get miss")
            ],
            lambda r: r <= 1.3,
        )
    )
    out.append(
        _check(
            "SQLite get no slower than diskcache.Cache.get (ratio ≤ 1)",
            [
                _ratio_part(look, f"{op} {t}", "kv_sqlite", sq, f"{op}, {t}", "diskcache")
                for t in threads
                for op in ("get hit", "get miss")
            ],
            lambda r: r <= 1.0,
        )
    )
    rd, raw_rd = "threadstore redis", "raw redis-py"
    out.append(
        _check(
            "Redis get/set ≤ 1.15x raw redis-py",
            [
                _ratio_part(look, f"{op} {t}", "kv_redis", rd, f"{op}, {t}", raw_rd)
                for t in threads
                for op in ("get hit", "get miss", "set 2 KB")
            ],
            lambda r: r <= 1.15,
        )
    )
    one_trip: list[Part] = []
    for bench, op in (
        ("lists_redis", "round trips per list_append"),
        ("threads_redis", "round trips per add_turn"),
        ("threads_redis", "round trips per get_thread"),
    ):
        v = look.value(bench, rd, op)
        one_trip.append((op, v, look.why_na(bench, rd, op), ""))
    out.append(
        _check(
            "Redis: list append, add_turn and get_thread one round trip each",
            one_trip,
            lambda v: v <= 1.0,
        )
    )
    for kind in ("memory", "sqlite", "redis"):
        bench = f"threads_{kind}"
        out.append(
            _check(
                f"{kind}: add_turn on a 49-turn thread ≤ 1.3x on a 1-turn thread",
                [
                    _ratio_part(
                        look,
                        "49 vs 1 turns",
                        bench,
                        f"threadstore {kind}",
                        "add_turn, 49 turns",
                        f"threadstore {kind}",
                        "add_turn, 1 turn",
                    )
                ],
                lambda r: r <= 1.3,
            )
        )
    lost: list[Part] = []
    for bench in ("writers_threads", "writers_processes"):
        for r in rows:
            if r["benchmark"] == bench and r["role"] == OURS and r["op"].startswith("lost"):
                label = f"{r['subject']}, {r['op']}"
                lost.append((label, r["max"], r["extra"].get("na", ""), " (worst run)"))
    if not lost:
        lost.append(("concurrent writers", None, "not run", ""))
    out.append(_check("threadstore loses no appends to concurrent writers", lost, lambda v: v == 0))
    return out


# -- the whole document --------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    rows: list[Row] = result["rows"]
    m = result["machine"]
    inserts = next((r["reps"] for r in rows if r["op"].startswith("insert new key")), 0)
    lines = [
        f"# threadstore benchmarks — {result['date']}",
        "",
        f"- Machine: {one_line(m)}",
        f"- Packages: {', '.join(f'{k} {v}' for k, v in m['packages'].items() if v)}",
        f"- Checkout: {m.get('git_commit') or '?'}"
        + (" (with uncommitted changes)" if m.get("git_dirty") else ""),
        f"- Command: `{result['command']}` ({'quick' if result['quick'] else 'full'} mode,"
        f" {result['seconds']:.0f} s)",
        "- Method: every benchmark in a fresh process; one warm-up, then"
        f" {'2' if result['quick'] else '5'} timed repetitions with the garbage collector off"
        + (f" (memory inserts: {inserts}, and again with the collector on)" if inserts else "")
        + "; median (min-max) of the repetitions; fixed random seed; same keys, values and"
        " operation order for every subject. "
        + (
            "Subjects measured in turns (one repetition each per round) are compared round by"
            " round: their ratio is the median of the per-round ratios; other ratios compare"
            " medians. "
            if any(r.get("round_group") for r in rows)
            else "Ratios compare medians. "
        )
        + "All figures are lower-is-better: a ratio below 1 means faster (or smaller) than the"
        " reference.",
        *(
            [
                f"- Report written again on {result['rendered']} from results.json"
                " (`python -m benchmarks --render`): the measurements are those of the checkout"
                " above; ratios and verdicts are computed as the current report code does."
            ]
            if result.get("rendered")
            else []
        ),
        f"- Load average (1 min) at start / end: {result.get('load_start', '?')} /"
        f" {result.get('load_end', '?')} (other work on the machine shows up in the maxima)",
        "",
    ]
    if result["quick"]:
        lines += [
            "> **Quick mode**: tiny sizes (e.g. 10k keys instead of 1M) and 2 repetitions. These"
            " figures only show that the harness works; do not quote them, and the target"
            " verdicts below are not meaningful.",
            "",
        ]
    lines += [
        "## Targets",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
    ]
    for v in targets(rows):
        mark = {"met": "✅ met", "missed": "❌ missed"}.get(v.verdict, v.verdict)
        lines.append(f"| {v.target} | {v.measured} | {mark} |")
    for bench in result["benchmarks"]:
        name = bench["name"]
        info = BY_NAME.get(name)
        lines += ["", f"## {info.title if info else name} (`{name}`)", ""]
        if info:
            lines += [info.about + ".", ""]
        if bench.get("error"):
            lines += [f"**crashed:** {bench['error']}", ""]
            continue
        if bench.get("na"):
            lines += [f"n/a: {bench['na']}", ""]
            continue
        brows = [r for r in rows if r["benchmark"] == name]
        if not brows:
            lines += ["(no rows)", ""]
            continue
        lines += group_table(name, brows)
        notes = _notes(brows)
        if notes:
            lines += ["", *notes]
        if bench.get("plot"):
            lines += ["", f"![{name}]({bench['plot']})"]
    return "\n".join(lines) + "\n"


def _notes(rows: list[Row]) -> list[str]:
    """Extra facts some rows carry (appended vs expected, server commands, ops/s)."""
    out = []
    for r in rows:
        note = r["extra"].get("note")
        if note:
            out.append(f"- {r['subject']}, {r['op']}: {note}")
    return out


# -- plots ---------------------------------------------------------------------------------------


def plot(bench: str, rows: list[Row], path: Path) -> bool:
    """One PNG per benchmark: per unit, grouped bars of medians with min-max error bars (or,
    for benchmarks measured at growing store sizes, time against size: one line per series)."""
    rows = [r for r in rows if r["median"] is not None]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if all("threads" in r["extra"] and "series" in r["extra"] for r in rows):
        return _plot_against_size(bench, rows, path)

    units = _ordered(r["unit"] for r in rows)
    subjects = subjects_of(rows)
    ops_per_unit = {u: _ordered(r["op"] for r in rows if r["unit"] == u) for u in units}
    widths = [max(3, len(ops)) for ops in ops_per_unit.values()]
    fig, axes = plt.subplots(
        1,
        len(units),
        figsize=(max(7.0, 1.3 * sum(widths) + 2), 5.2),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    colours = plt.get_cmap("tab10")
    colour = {s: colours(i % 10) for i, s in enumerate(subjects)}
    look = Lookup(rows)
    for ax, unit in zip(axes[0], units, strict=True):
        ops = ops_per_unit[unit]
        present = [s for s in subjects if any(look.row(bench, s, op) for op in ops)]
        width = 0.8 / max(1, len(present))
        medians: list[float] = []
        for i, s in enumerate(present):
            xs, ys, lo, hi = [], [], [], []
            for j, op in enumerate(ops):
                row = look.row(bench, s, op)
                if row is None:
                    continue
                xs.append(j + (i - (len(present) - 1) / 2) * width)
                ys.append(row["median"])
                lo.append(row["median"] - row["min"])
                hi.append(row["max"] - row["median"])
            medians += [y for y in ys if y > 0]
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=s, color=colour[s])
        if medians and min(medians) > 0 and max(medians) / min(medians) > 30:
            ax.set_yscale("log")
        ax.set_xticks(range(len(ops)))
        ax.set_xticklabels(ops, rotation=25, ha="right", fontsize=8)
        ax.set_ylabel(f"{unit} (lower is better)")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    info = BY_NAME.get(bench)
    fig.suptitle(f"{info.title if info else bench}: median, bars min-max", fontsize=11)
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_against_size(bench: str, rows: list[Row], path: Path) -> bool:
    """Median time against the number of threads stored, log-log, one line per subject and
    series (a flat line: the cost does not grow with the store); bars min-max."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 5.2))
    styles = ["-", "--", ":"]
    colours = plt.get_cmap("tab10")
    subjects = subjects_of(rows)
    series = _ordered(r["extra"]["series"] for r in rows)
    for i, subject in enumerate(subjects):
        for j, name in enumerate(series):
            points = sorted(
                (r["extra"]["threads"], r["median"], r["min"], r["max"])
                for r in rows
                if r["subject"] == subject and r["extra"]["series"] == name
            )
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
            ax.errorbar(
                xs, ys, yerr=err, capsize=2, marker="o", linestyle=styles[j % len(styles)],
                color=colours(i % 10), label=f"{subject}: {name}",
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("threads stored")
    ax.set_ylabel(f"{rows[0]['unit']} per call (lower is better)")
    ax.grid(alpha=0.3, which="both")
    info = BY_NAME.get(bench)
    fig.suptitle(f"{info.title if info else bench}: median against store size", fontsize=11)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def nan_free(x: Any) -> Any:
    """Replace NaN/inf (not valid JSON) by None, recursively."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: nan_free(v) for k, v in x.items()}
    if isinstance(x, list):
        return [nan_free(v) for v in x]
    return x
