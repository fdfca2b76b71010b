"""The HTML pages of a comparison and of a sweep: one self-contained file each."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dropkit.experiments.results import RunResult
from dropkit.experiments.summary import learned_runs
from dropkit.experiments.verdict import (
    LEARNED_METRICS,
    LEVEL,
    SELECTION_RULE,
    learned_effects,
)

if TYPE_CHECKING:
    from dropkit.experiments.sweep import SweepResult

__all__ = ["FIELDS", "html_page", "learned_section", "write_sweep_report"]


#: What each configuration field of a comparison means (``CompareConfig.flat()``'s keys).
FIELDS = {
    "dataset": "the data set (a built-in name, or your code as FILE.py:NAME)",
    "label_noise": "fraction of training labels replaced by random ones (0: none)",
    "split_seed": "seed of the train/validation split and of the label noise",
    "rates": "the dropout rates compared (0: no dropout, the baseline)",
    "seeds": "runs per rate; runs with the same seed share initial weights and batch order",
    "batched": (
        "True: the seeds of a rate were trained together as one stacked model, each run with "
        "its own initial weights, batch order and dropout masks (faster for small models); "
        "False: one run at a time"
    ),
    "code": "digest of model or data code passed as Python objects",
    "threads": (
        "torch's thread count while the runs trained, fixed so that the numbers do not depend "
        "on the machine's load; another count gives other bits and is stored apart"
    ),
    "task": (
        "classification (cross-entropy on class labels) or regression (squared error on "
        "standardized targets, scores in the targets' units)"
    ),
    "auto": (
        "True: one learned-rate run per seed beside the rates (Concrete dropout, every layer "
        "from p = 0.1, regularizer weights l**2 / N and 2 / N with l = 0.01)"
    ),
    "model": "the model (mlp, cnn, rescnn, or your code as FILE.py:NAME)",
    "variant": "the cnn's conv-block dropout: channel, element or block (DropBlock)",
    "hidden": "hidden layer widths (mlp) or the head's width (cnn)",
    "layer_scale": "per-dropout-layer multipliers of the rate",
    "optimizer": "the optimizer (adam, adamw, or sgd with momentum 0.9)",
    "lr": "learning rate",
    "weight_decay": "weight decay (L2 penalty; decoupled for adamw)",
    "epochs": "training epochs per run (the most, with early stopping)",
    "batch_size": "examples per training batch",
    "early_stopping": "patience in epochs on validation loss (0: off)",
    "schedule": "constant, early or late dropout (Liu et al. 2023)",
    "schedule_epochs": "epochs with (early) or without (late) dropout",
}


def learned_section(results: Sequence[RunResult]) -> str:
    """The HTML of the learned-rate runs' paired comparison (empty without such runs)."""
    if not learned_runs(results):
        return ""
    esc = html.escape
    try:
        effects = learned_effects(results)
    except ValueError as error:
        return f"<h2>Learned rates (auto)</h2><p>No paired comparison: {esc(str(error))}.</p>"
    body = ""
    for e in effects:
        _, name, scale, unit = next(m for m in LEARNED_METRICS if m[0] == e.metric)
        digits = 1 if scale > 1 else 3
        cells = (
            name + unit.replace(" points", " (points)"),
            e.against,
            f"{scale * e.mean:+.{digits}f}",
            f"{scale * e.low:+.{digits}f} to {scale * e.high:+.{digits}f}",
            str(e.seeds),
        )
        body += "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
    head = "".join(
        f"<th>{esc(h)}</th>"
        for h in (
            "metric",
            "against",
            "learned minus against",
            f"{100 * LEVEL:g}% paired t-interval",
            "seeds",
        )
    )
    note = (
        "The learned-rate runs (auto) against the grid, seed by seed (the same data, "
        "initialization and batch order): the mean difference (learned minus the grid rate; "
        "accuracy in points, higher is better; NLL and ECE, lower is better) and its paired "
        "t-interval (t with seeds - 1 degrees of freedom). The grid rate is chosen on the "
        f"validation split ({SELECTION_RULE}), never on the test set."
    )
    return (
        f'<h2>Learned rates (auto)</h2><table id="learned"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table><p>{esc(note)}</p>"
    )


def html_page(
    title: str,
    rows: list[dict[str, str]],
    verdict_line: str,
    images: dict[str, bytes],
    config: dict[str, object],
    environment: dict[str, str],
    caption: str,
    *,
    captions: dict[str, str] | None = None,
    meanings: dict[str, str] | None = None,
    extra: str = "",
) -> str:
    esc = html.escape
    captions = captions or {}
    head = "".join(f"<th>{esc(k)}</th>" for k in rows[0]) if rows else ""
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(v)}</td>" for v in row.values()) + "</tr>" for row in rows
    )
    figures = "".join(
        f'<figure><img alt="{esc(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>'
        f"{esc(captions.get(name, name))}</figcaption></figure>"
        for name, data in images.items()
    )

    def pairs(d: dict[str, object] | dict[str, str], notes: dict[str, str] | None = None) -> str:
        def note(k: object) -> str:
            return f'<td class="meaning">{esc(notes.get(str(k), ""))}</td>' if notes else ""

        return "".join(
            f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td>{note(k)}</tr>" for k, v in d.items()
        )

    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }}
th {{ background: #f3f3f3; }}
.verdict {{ font-size: 1.1em; font-weight: 600; }}
figure {{ display: inline-block; margin: 0.5em; max-width: 40em; vertical-align: top; }}
figcaption {{ font-size: 0.9em; }}
td.meaning {{ text-align: left; color: #555; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(title)}</h1>
<p class="verdict">{esc(verdict_line)}</p>
<table id="summary"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<p>{esc(caption)}</p>
{extra}
<h2>Figures</h2>
{figures}
<h2>Configuration</h2>
<table id="config">{pairs(config, meanings)}</table>
<h2>Environment</h2>
<table id="environment">{pairs(environment)}</table>
</body></html>
"""


_SWEEP_CAPTION = (
    "The completed trials with the highest validation accuracy (percent, one seed each); pruned "
    "trials stopped early and are not ranked. A search's best trial is optimistic: the command "
    "above re-runs it against no dropout over several seeds, and that paired result is the one "
    "to trust."
)


def write_sweep_report(
    directory: Path,
    title: str,
    result: SweepResult,
    images: dict[str, bytes],
    config: dict[str, object],
    environment: dict[str, str],
) -> Path:
    """Write ``sweep.html`` (the top trials, the compare command, the study's plots) and the
    plots as PNG files into ``directory``; return the page's path."""
    for name, data in images.items():
        (directory / name).write_bytes(data)
    rows = [
        {
            "trial": str(t["number"]),
            "val acc %": f"{100 * t['value']:.1f}",
            **{k: f"{v:.3g}" if isinstance(v, float) else str(v) for k, v in t["params"].items()},
        }
        for t in result.trials[:10]
    ]
    columns = list(dict.fromkeys(k for row in rows for k in row))  # first-seen order
    rows = [{c: row.get(c, "-") for c in columns} for row in rows]
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(result.states.items()))
    line = (
        f"Best validation accuracy {100 * result.best_value:.1f}% ({counts}). Re-run it "
        f"against no dropout with several seeds: {result.compare_command}"
    )
    page = html_page(title, rows, line, images, config, environment, _SWEEP_CAPTION)
    path = directory / "sweep.html"
    path.write_text(page, encoding="utf-8")
    return path
