"""Reports from an evaluation folder: the paper's Table 1 shape, paired comparisons, accuracy-vs-cost plot.

Answers are re-extracted from the stored solutions with the current ``read_answer`` and scored with the
current metrics, and dollars recomputed from the stored token counts with the given price table, so neither
an extractor or metric fix nor a new price needs a rerun.

Paired comparison of runs A and B on the items both have: the accuracy difference B − A with a 95 %
confidence interval (Wald interval for paired proportions: SE = sqrt(b + c − (c − b)²/n) / n, b = items
only A got right, c = only B) and McNemar's exact test (two-sided binomial test of b against b + c at ½;
no scipy needed). F1 (not a right/wrong outcome) gets the mean paired difference with a normal interval.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_dod.evaluation.cost import PriceTable
from langchain_dod.evaluation.metrics import METRICS, PRIMARY_METRIC, score
from langchain_dod.parsing import read_answer
from langchain_dod.solvers import is_local_spec

__all__ = [
    "Evaluation",
    "Paired",
    "RunSummary",
    "load_evaluation",
    "markdown_table",
    "mcnemar_exact",
    "paired_comparison",
    "paired_scores",
    "plot_accuracy_vs_cost",
    "summarize",
    "write_report",
]

BINARY_METRICS = {"strict", "lenient", "em", "acc", "contains"}


@dataclass
class Evaluation:
    """An evaluation folder read back: its manifest and, per run, its meta and records by id."""

    path: Path
    manifest: dict[str, Any]
    runs: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]]

    @property
    def fmt(self) -> str:
        """The data set format (decides the metrics)."""
        return self.manifest["dataset"]["format"]


def load_evaluation(out: str | Path) -> Evaluation:
    """Read ``OUT/manifest.json`` and every ``OUT/runs/*.jsonl`` (records of items outside the manifest dropped)."""
    from langchain_dod.evaluation.runner import EvaluationError, ResultsFile, read_json

    out = Path(out)
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise EvaluationError(f"{out} is not an evaluation folder (no manifest.json); run `dod eval run` first.")
    manifest = read_json(manifest_path)
    ids = manifest["ids"]
    runs = {}
    for path in sorted((out / "runs").glob("*.jsonl")):
        meta_path = path.with_suffix(".meta.json")
        meta = read_json(meta_path) if meta_path.exists() else {}
        records = ResultsFile(path).load()
        runs[path.stem] = (meta, {i: records[i] for i in ids if i in records})
    return Evaluation(out, manifest, runs)


def _answer_format(meta: dict[str, Any]) -> str:
    """How the run's solver wrote its answers (``RunSpec.answer_format``; runs from before it existed: text)."""
    return str(meta.get("spec", {}).get("answer_format", "text"))


def _rescore(fmt: str, record: dict[str, Any], answer_format: str = "text") -> dict[str, Any]:
    """The record's scores and ``parsed`` with today's extractor (the chains' own) and metrics."""
    golds = record.get("golds") or [[record.get("gold", "")]]
    # the stored prediction was extracted when the run was made: re-extract, so an extractor fix reaches old runs
    solution = record.get("solution")
    return score(fmt, read_answer(solution, answer_format) if solution else record.get("prediction"), golds)


@dataclass
class RunSummary:
    """One row of the table."""

    name: str
    decomposer: str
    solver: str
    n: int
    errors: int
    unparsed: int
    metrics: dict[str, float]
    tokens: dict[str, dict[str, Any]]  # per stage: mean "input" and "output" tokens, and their "sources"
    dollars: dict[str, float]
    cpu_seconds: dict[str, float | None]
    latency: dict[str, float | None]
    wall_seconds: float | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paid_dollars(self) -> float:
        """Decomposition plus solving dollars over the ``n`` items."""
        return self.dollars.get("decomposer", 0.0) + self.dollars.get("solver", 0.0)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(
    name: str, meta: dict[str, Any], records: dict[str, dict[str, Any]], fmt: str, prices: PriceTable | None = None
) -> RunSummary:
    """Accuracy, tokens, dollars, CPU seconds and latency of one run's records."""
    prices = prices or PriceTable()
    rows = list(records.values())
    scored = [_rescore(fmt, r, _answer_format(meta)) for r in rows]
    unparsed = sum(1 for s in scored if not s.pop("parsed", False))
    names = sorted(
        {k for s in scored for k in s}, key=lambda k: list(METRICS[fmt]).index(k) if k in METRICS[fmt] else 99
    )
    metrics = {k: sum(s.get(k, 0.0) for s in scored) / len(scored) for k in names} if scored else {}
    spec = meta.get("spec", {})
    solver_model = next((r["usage"]["solver"]["model"] for r in rows if (r.get("usage") or {}).get("solver")), None)
    tokens, dollars, cpu, latency = {}, {}, {}, {}
    for stage in ("decomposer", "solver"):
        usages = [u for u in ((r.get("usage") or {}).get(stage) for r in rows) if u]
        if not usages:
            continue
        tokens[stage] = {
            "input": _mean([u.get("input_tokens") or 0 for u in usages]) or 0.0,
            "output": _mean([u.get("output_tokens") or 0 for u in usages]) or 0.0,
            "sources": sorted({u.get("token_source", "usage") for u in usages}),
        }
        dollars[stage] = sum(prices.stage_dollars(stage, u, solver_model) for u in usages)
        cpus = [u.get("cpu_seconds") for u in usages if u.get("local")]
        cpu[stage] = _mean(cpus) if cpus and all(c is not None for c in cpus) else None
        secs = [u["seconds"] for u in usages if u.get("seconds") is not None]
        latency[stage] = statistics.median(secs) if secs else None
    items = [r["seconds"] for r in rows if r.get("seconds") is not None]
    latency["item"] = statistics.median(items) if items else None
    dec = spec.get("decomposer")
    extra: dict[str, Any] = {}
    if dec is not None:
        ran = [r for r in rows if not r.get("error")]
        extra["subquestions_per_item"] = _mean([len(r.get("subquestions") or []) for r in ran])
        extra["empty_decompositions"] = sum(1 for r in ran if not r.get("subquestions"))
    return RunSummary(
        name=name,
        decomposer=("— (" + spec.get("mode", "?") + ")") if dec is None else str(dec),
        solver=str(spec.get("solver", solver_model)),
        n=len(rows),
        errors=sum(1 for r in rows if r.get("error")),
        unparsed=unparsed,
        metrics=metrics,
        tokens=tokens,
        dollars=dollars,
        cpu_seconds=cpu,
        latency=latency,
        wall_seconds=meta.get("wall_seconds"),
        extra=extra,
    )


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial test at ½)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass
class Paired:
    """A paired comparison of run ``b`` against run ``a`` on their common items."""

    a: str
    b: str
    metric: str
    n: int
    score_a: float
    score_b: float
    difference: float
    ci95: tuple[float, float]
    only_a: int | None = None
    only_b: int | None = None
    p_value: float | None = None


def paired_comparison(ev: Evaluation, a: str, b: str, metric: str | None = None) -> Paired:
    """Compare runs ``a`` and ``b`` of ``ev`` on the items both have (``metric`` defaults to the primary one)."""
    metric = metric or PRIMARY_METRIC[ev.fmt]
    for run in (a, b):
        if run not in ev.runs:
            raise ValueError(f"No run {run!r} in {ev.path}; runs: {sorted(ev.runs)}.")
    ra, rb = ev.runs[a][1], ev.runs[b][1]
    common = [i for i in ev.manifest["ids"] if i in ra and i in rb]
    if not common:
        raise ValueError(f"Runs {a!r} and {b!r} share no items yet.")
    fa, fb = _answer_format(ev.runs[a][0]), _answer_format(ev.runs[b][0])
    xa = [_rescore(ev.fmt, ra[i], fa).get(metric) for i in common]
    xb = [_rescore(ev.fmt, rb[i], fb).get(metric) for i in common]
    if any(x is None for x in xa + xb):
        raise ValueError(f"Metric {metric!r} is not defined for these items; choose one of {METRICS[ev.fmt]}.")
    return paired_scores(a, b, metric, xa, xb)  # type: ignore[arg-type]


def paired_scores(a: str, b: str, metric: str, xa: Sequence[float], xb: Sequence[float]) -> Paired:
    """The paired comparison of per-item scores ``xb`` against ``xa`` (same items, same order).

    A binary metric (``BINARY_METRICS``) gets the difference of the discordant pairs with McNemar's exact test;
    others the mean per-item difference with a normal 95 % interval.
    """
    n = len(xa)
    if n == 0 or n != len(xb):
        raise ValueError(f"Paired scores need the same, non-zero number of items; got {len(xa)} and {len(xb)}.")
    sa, sb = sum(xa) / n, sum(xb) / n
    if metric in BINARY_METRICS:
        only_a = sum(1 for x, y in zip(xa, xb, strict=True) if x and not y)
        only_b = sum(1 for x, y in zip(xa, xb, strict=True) if y and not x)
        diff = (only_b - only_a) / n
        se = math.sqrt(max(0.0, (only_a + only_b) - (only_b - only_a) ** 2 / n)) / n
        ci = (max(-1.0, diff - 1.96 * se), min(1.0, diff + 1.96 * se))  # a difference lies in [-1, 1]
        return Paired(a, b, metric, n, sa, sb, diff, ci, only_a, only_b, mcnemar_exact(only_a, only_b))
    diffs = [y - x for x, y in zip(xa, xb, strict=True)]
    diff = sum(diffs) / n
    se = statistics.stdev(diffs) / math.sqrt(n) if n > 1 else 0.0
    return Paired(a, b, metric, n, sa, sb, diff, (diff - 1.96 * se, diff + 1.96 * se))


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _short(label: str) -> str:
    """A local SPEC without its provider (the table has no room for it); other labels as they are."""
    return label.partition(":")[2] if is_local_spec(label) else label


def _order(name: str, meta: dict[str, Any]) -> tuple[int, str]:
    spec = meta.get("spec", {})
    rank = {"direct": 0, "cot": 1}.get(spec.get("mode", ""), 2) if spec.get("decomposer") is None else 3
    return rank, name


def markdown_table(summaries: list[RunSummary], fmt: str) -> str:
    """The Table 1 shape: accuracy per metric, decomposition cost, solving cost (plus tokens, CPU, time)."""
    metric_names = [m for m in METRICS[fmt] if any(m in s.metrics for s in summaries)]
    head = (
        ["run", "decomposer / solver", "n"]
        + [f"{m} %" for m in metric_names]
        + [
            "sub-q / item (none)",
            "decomp. $ / solve $ per 1K q.",
            "decomp. tokens in/out",
            "solve tokens in/out",
            "local CPU s/item (dec/solve)",
            "median latency s (dec/solve)",
            "wall min",
            "errors / unparsed",
        ]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        dt, st = s.tokens.get("decomposer"), s.tokens.get("solver")
        subq = s.extra.get("subquestions_per_item")
        per_1k = 1000 / s.n if s.n else 0.0
        row = [f"`{s.name}`", f"{_short(s.decomposer)} / {_short(s.solver)}", str(s.n)]
        row += [_pct(s.metrics.get(m)) for m in metric_names] + [
            "–" if subq is None else f"{subq:.1f} ({s.extra['empty_decompositions']})",
            f"{s.dollars.get('decomposer', 0.0) * per_1k:.4f} / {s.dollars.get('solver', 0.0) * per_1k:.3f}",
            f"{dt['input']:.0f} / {dt['output']:.0f}" if dt else "–",
            f"{st['input']:.0f} / {st['output']:.0f}" if st else "–",
            f"{_num(s.cpu_seconds.get('decomposer'), 1)} / {_num(s.cpu_seconds.get('solver'), 1)}",
            f"{_num(s.latency.get('decomposer'), 1)} / {_num(s.latency.get('solver'), 1)}",
            _num(s.wall_seconds / 60 if s.wall_seconds else None, 1),
            f"{s.errors} / {s.unparsed}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_accuracy_vs_cost(summaries: list[RunSummary], fmt: str, path: str | Path, title: str | None = None) -> Path:
    """PNG of accuracy (primary metric, plus the lenient one for GSM8K) against paid dollars per 1K items."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("The plot needs matplotlib: pip install 'langchain-dod[eval]'.") from err
    primary = PRIMARY_METRIC[fmt]
    one_solver = len({s.solver for s in summaries}) == 1
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for s in summaries:
        if not s.n:
            continue
        x = 1000 * s.paid_dollars / s.n
        label = s.name.split("__")[0] if one_solver else s.name  # one solver: named once, under the axis
        ax.scatter([x], [100 * s.metrics.get(primary, 0.0)], s=40)
        ax.annotate(
            label, (x, 100 * s.metrics.get(primary, 0.0)), fontsize=7, xytext=(4, 3), textcoords="offset points"
        )
        if fmt == "gsm8k" and "lenient" in s.metrics:
            ax.scatter([x], [100 * s.metrics["lenient"]], s=40, facecolors="none", edgecolors="gray")
    ax.set_xlabel("paid cost, $ per 1,000 questions (decomposition + solving)")
    ax.set_ylabel(f"{primary} accuracy, %" + (" (hollow: lenient)" if fmt == "gsm8k" else ""))
    if one_solver and summaries:
        ax.set_xlabel(ax.get_xlabel() + f"\nsolver: {_short(summaries[0].solver)}")
    ax.set_title(title or "Accuracy against paid cost", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def _default_pairs(ev: Evaluation) -> list[tuple[str, str]]:
    """Each run against the single-stage chain-of-thought run with the same solver (else direct)."""
    specs = {name: meta.get("spec", {}) for name, (meta, _) in ev.runs.items()}
    pairs = []
    for name, spec in specs.items():
        for baseline_mode in ("cot", "direct"):
            base = next(
                (
                    n
                    for n, s in specs.items()
                    if s.get("decomposer") is None
                    and s.get("mode") == baseline_mode
                    and s.get("solver") == spec.get("solver")
                    and n != name
                ),
                None,
            )
            if base is not None and (base, name) not in pairs and (name, base) not in pairs:
                if spec.get("decomposer") is not None or baseline_mode == "cot":
                    pairs.append((base, name))
    return pairs


def write_report(
    out: str | Path,
    prices: PriceTable | None = None,
    pairs: list[tuple[str, str]] | None = None,
    title: str | None = None,
    plot: bool = True,
) -> Path:
    """Write ``OUT/report.md``, ``OUT/report.json`` and ``OUT/accuracy_vs_cost.png``; return the Markdown path."""
    prices = prices or PriceTable()
    ev = load_evaluation(out)
    ordered = sorted(ev.runs.items(), key=lambda kv: _order(kv[0], kv[1][0]))
    summaries = [summarize(name, meta, recs, ev.fmt, prices) for name, (meta, recs) in ordered]
    compared = _comparisons(ev, _default_pairs(ev) if pairs is None else _known_pairs(ev, pairs))
    out = Path(out)
    lines = _summary_lines(ev, summaries, prices, title, out.name) + _paired_lines(compared)
    if plot and summaries:
        png = plot_accuracy_vs_cost(summaries, ev.fmt, out / "accuracy_vs_cost.png", title)
        lines += ["", f"![accuracy vs paid cost]({png.name})"]
    md = out / "report.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = {
        "manifest": {k: v for k, v in ev.manifest.items() if k != "ids"} | {"n_ids": len(ev.manifest["ids"])},
        "prices": prices.to_dict(),
        "runs": [s.__dict__ for s in summaries],
        "paired": [p.__dict__ for p in compared],
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8")
    return md


def _known_pairs(ev: Evaluation, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The pairs asked for; a mistyped run name must not silently drop a comparison the reader expects."""
    unknown = sorted({run for pair in pairs for run in pair} - set(ev.runs))
    if unknown:
        raise ValueError(f"No run {', '.join(map(repr, unknown))} in {ev.path}; runs: {sorted(ev.runs)}.")
    return pairs


def _comparisons(ev: Evaluation, pairs: list[tuple[str, str]]) -> list[Paired]:
    """Every pair on every metric the data set has (a metric not defined for its items is left out)."""
    compared = []
    for a, b in pairs:
        for metric in METRICS[ev.fmt]:
            try:
                compared.append(paired_comparison(ev, a, b, metric))
            except ValueError:
                continue
    return compared


def _summary_lines(
    ev: Evaluation, summaries: list[RunSummary], prices: PriceTable, title: str | None, folder: str
) -> list[str]:
    """The title, the data set, the table and what its columns mean."""
    ds = ev.manifest["dataset"]
    lines = [
        f"# {title or 'Evaluation report'}",
        "",
        f"Data: `{ds['path']}` ({ds['format']}, sha256 `{ds['sha256'][:12]}…`), seed {ev.manifest.get('seed')}, "
        f"{len(ev.manifest['ids'])} items planned; the exact ids are in `manifest.json`. "
        f"Generated by `dod eval report {folder}`.",
        "",
        markdown_table(summaries, ev.fmt),
        "",
        f"Dollars price {_describe_prices(prices)}; per 1,000 questions (mean over each run's n items). "
        "Tokens are per item (means). Local CPU seconds are process CPU time of the local (llama.cpp) stages, "
        "per item; latency is the median per stage; wall time is the run's total over all sessions.",
    ]
    if ev.fmt == "gsm8k":
        lines += [
            "",
            "GSM8K `strict`: the extracted answer is one number equal to the gold; `lenient` (the paper's): the "
            "gold number appears as a number token in the answer.",
        ]
    return lines


def _paired_lines(compared: list[Paired]) -> list[str]:
    """The paired-comparison table; nothing when there is no pair."""
    if not compared:
        return []
    lines = [
        "",
        "## Paired comparisons (B − A on the items both runs have)",
        "",
        "| A | B | metric | n | A % | B % | B − A (95 % CI), points | only A / only B right | McNemar p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in compared:
        lines.append(
            f"| `{p.a}` | `{p.b}` | {p.metric} | {p.n} | {_pct(p.score_a)} | {_pct(p.score_b)} | "
            f"{100 * p.difference:+.1f} ({100 * p.ci95[0]:+.1f}, {100 * p.ci95[1]:+.1f}) | "
            f"{'–' if p.only_a is None else f'{p.only_a} / {p.only_b}'} | "
            f"{'–' if p.p_value is None else f'{p.p_value:.3g}'} |"
        )
    return lines


def _describe_prices(prices: PriceTable) -> str:
    d = prices.default
    text = f"tokens at ${d.input_per_1k:g} / ${d.output_per_1k:g} per 1K input / output tokens (the paper's rate)"
    if prices.scale_decomposer_by_params:
        text += "; a decomposer that is a smaller model than the solver at that rate × its parameters / 175B"
    if prices.models:
        text += "; overrides: " + ", ".join(
            f"{k} ${v.input_per_1k:g}/${v.output_per_1k:g}" for k, v in prices.models.items()
        )
    return text
