"""``matrix.html``: the detection matrix as a heatmap linked to each cell's evidence,
with loss and LR curves (clean vs bug), the impact table and severity curves.
Rendered with matplotlib and a Jinja2 template from the results database only;
images are embedded, so the file opens from disk anywhere."""
from __future__ import annotations

import base64
import io
import json
import signal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from jinja2 import Environment  # noqa: E402
from markupsafe import Markup  # noqa: E402

CMAP = matplotlib.colormaps["Reds"]

TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>recipebench detection matrix</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1500px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:1em 0}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:center}
th.rot{height:150px;white-space:nowrap;vertical-align:bottom}
th.rot>div{transform:rotate(-60deg);width:24px}
td a{color:inherit;text-decoration:none;display:block}
td.caught{outline:2px solid #000;font-weight:bold}
tr.clean td{background:#eef}
.meta{color:#555;font-size:13px}
.unfinished{background:#fde2e2;border:2px solid #b00;padding:0.5em 1em;font-weight:bold}
details{margin:0.3em 0} pre{font-size:11px;white-space:pre-wrap}
</style></head><body>
<h1>recipebench detection matrix</h1>
{% if unfinished %}<p class="unfinished">{{ unfinished }}</p>{% endif %}
{% if headline %}<h2>Headline: one run, every recipe detector</h2><ul class="headline">
{% for line in headline %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
<p class="meta">Command: <code>{{ meta.command }}</code><br>
{% for k, v in meta.provenance.items() %}{{ k }} {{ v }}{% if not loop.last %} · {% endif %}{% endfor %}<br>
Cell colour = detection rate over seeds; bold outline and ✓ = caught (one-sided Fisher p &lt; 0.05 against the
detector's clean rate); the <code>clean</code> row is the false-positive rate. Click a cell for its evidence.</p>
{% for pipe in pipelines %}
<h2 id="{{ pipe.name }}">{{ pipe.name }}</h2>
<table><tr><th>bug</th>{% for d in detectors %}<th class="rot"><div>{{ d }}</div></th>{% endfor %}</tr>
{% for row in pipe.rows %}<tr class="{{ 'clean' if row.bug == 'clean' else '' }}"><th><a href="#{{ row.anchor }}">{{ row.bug }}</a></th>
{% for c in row.cells %}<td style="background:{{ c.color }};color:{{ c.ink }}" class="{{ 'caught' if c.caught else '' }}" title="{{ c.title }}"><a href="#{{ c.anchor }}">{{ c.text }}</a></td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
<h2>Impact of each bug</h2>{{ impact_table }}
{% if severity_png %}<h2>Severity curves</h2><img src="data:image/png;base64,{{ severity_png }}" alt="severity curves">{% endif %}
<h2>Evidence</h2>
{% for ev in evidence %}
<section id="{{ ev.anchor }}"><h3>{{ ev.pipeline }} / {{ ev.bug }}</h3>
{% if ev.png %}<img src="data:image/png;base64,{{ ev.png }}" alt="curves, clean vs {{ ev.bug }}">{% endif %}
{% if ev.filters %}<br><img src="data:image/png;base64,{{ ev.filters }}" alt="first-layer filters">{% endif %}
{% for d in ev.detectors %}<details id="{{ d.anchor }}"><summary>{{ d.name }}: {{ d.summary }}</summary>
{% if d.png %}<img src="data:image/png;base64,{{ d.png }}" alt="{{ d.name }} evidence">{% endif %}<pre>{{ d.text }}</pre></details>{% endfor %}
</section>
{% endfor %}
</body></html>
"""


PALETTE = 64  # colours of an embedded figure: line plots use a handful; a quarter of the RGBA bytes


def _png(fig) -> str:
    """The figure as a base64 PNG with an adaptive palette of ``PALETTE`` colours (no
    dithering): what a reader sees is unchanged, the file about 4x smaller than RGBA."""
    from PIL import Image

    buf = io.BytesIO()
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.15, top=0.85, wspace=0.3)  # fixed layout: no layout engine
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    image = Image.open(buf).convert("RGB").quantize(PALETTE, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return base64.b64encode(out.getvalue()).decode()


def _number(value) -> float | None:
    """``value`` as a float, or None when it is missing (None, NaN, not a number): a
    detector that errored or timed out has no score, an error run no metric."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(value) else value


def _fmt(value, spec: str) -> str:
    """``format(value, spec)``, or ``n/a`` for a missing number."""
    number = _number(value)
    return "n/a" if number is None else format(number, spec)


def _anchor(*parts) -> str:
    return "-".join(str(p).replace("@", "_") for p in parts)


def curves_png(runs: pd.DataFrame, pipeline: str, variant: str) -> str | None:
    """Clean seeds in grey, the bug's in red: training loss, LR (when it changes), the
    per-channel mean of the batches just before the net, and the share of fixed-batch
    predictions that flip between snapshots (prediction dynamics)."""
    sub = runs[(runs.pipeline == pipeline) & runs.variant.isin(["clean", variant]) & (runs.seed < 3)]
    if sub.empty or not any(c.get("loss") for c in sub.curves):
        return None
    panels = [("training loss (seeds 0-2)", "step", "loss", "linear")]
    if any(len(set(c.get("lr", []))) > 1 for c in sub.curves):
        panels.append(("learning rate", "lr_step", "lr", "log"))
    if any(c.get("input_mean") for c in sub.curves):
        panels.append(("input mean just before the net (per batch)", None, "input_mean", "linear"))
    if any(c.get("pred_churn") for c in sub.curves):
        panels.append(("predictions flipped since last snapshot", "pred_steps", "pred_churn", "linear"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 2.6), squeeze=False)
    for ax, (title, x, y, scale) in zip(axes[0], panels):
        for r in sub.itertuples():
            c, colour = r.curves, ("#999" if r.variant == "clean" else "#c00")
            values = c.get(y) or []
            if not len(values):
                continue
            if y == "input_mean":
                values = [row[0] for row in values]  # first channel
            xs = (c.get(x) if c.get(x) is not None else c.get("step")) if x else list(range(len(values)))
            xs = xs[:len(values)]  # rows recorded before lr_step: LR per batch, as many as the steps
            ax.plot(xs, values, color=colour, lw=1, label=r.variant if r.seed == sub.seed.min() else None)
        ax.set_title(title, fontsize=8)
        ax.set_yscale(scale)
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def filters_png(runs: pd.DataFrame, pipeline: str, variant: str) -> str | None:
    """First-layer conv filters after training, clean (top) vs the bug (bottom), seed 0."""
    picks = []
    for v in ("clean", variant):
        row = runs[(runs.pipeline == pipeline) & (runs.variant == v)].sort_values("seed").head(1)
        if row.empty or not row.curves.iloc[0].get("first_layer"):
            return None
        picks.append(np.asarray(row.curves.iloc[0]["first_layer"])[:, 0])  # (out, k, k)
    def mosaic(filters):  # (out, k, k) -> one row of filters, each scaled to [0, 1], 1-pixel gaps
        f = (filters - filters.min(axis=(1, 2), keepdims=True)) / (np.ptp(filters, axis=(1, 2), keepdims=True) + 1e-12)
        return np.pad(f, ((0, 0), (0, 1), (0, 1)), constant_values=1).transpose(1, 0, 2).reshape(f.shape[1] + 1, -1)

    fig, ax = plt.subplots(figsize=(0.45 * picks[0].shape[0], 1.1))
    ax.imshow(np.vstack([mosaic(picks[0]), mosaic(picks[1])]), cmap="gray", interpolation="nearest")
    ax.set(xticks=[], yticks=[], title=f"first-layer filters: clean (top) vs {variant} (bottom)")
    ax.title.set_fontsize(7)
    return _png(fig)


def dependency_png(chart) -> str:
    """The backprop dependency chart: row i = where example i's output gets its gradient."""
    fig, ax = plt.subplots(figsize=(2.4, 2.2))
    ax.imshow(np.asarray(chart), cmap="Reds", vmin=0, vmax=1)
    ax.set(xlabel="input example", ylabel="output example", title="gradient mass")
    return _png(fig)


def severity_png(sev: pd.DataFrame) -> str | None:
    if sev is None or sev.empty:
        return None
    groups = list(sev.groupby(["pipeline", "bug"], sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 * len(groups), 2.8), squeeze=False)
    for ax, ((pipeline, bug), g) in zip(axes[0], groups):
        for d in g.columns[5:]:
            if g[d].fillna(0).max() > 0:
                ax.plot(g["severity"], g[d], marker="o", label=d)
        ax.set(title=f"{pipeline}/{bug}", ylabel="detection rate", ylim=(-0.05, 1.05))
        ax.legend(fontsize=6)
    return _png(fig)


def render_html(cells: pd.DataFrame, impact: pd.DataFrame, runs: pd.DataFrame, verdicts: pd.DataFrame,
                meta: dict, severity: pd.DataFrame | None = None, unfinished: str | None = None,
                headline: list[str] | None = None) -> str:
    """The page; ``unfinished`` (the run's "N of M jobs done" note) is shown as a banner,
    ``headline`` (the single-run suite view, one line per side) above everything."""
    detectors = sorted(cells.detector.unique())
    pipelines, evidence = [], []
    for pipeline, g in cells.groupby("pipeline", sort=True):
        rows = []
        for bug in ["clean"] + sorted(set(g.bug) - {"clean"}):
            sub = g[g.bug == bug].set_index("detector")
            row_cells = []
            for d in detectors:
                if d not in sub.index or sub.loc[d].seeds == 0:
                    failed = d in sub.index and sub.loc[d].errors > 0
                    row_cells.append(dict(color="#bbb" if failed else "#fff", ink="#000", caught=False,
                                          text="error" if failed else "n/a" if d in sub.index else "",
                                          title=f"error or timeout on {sub.loc[d].errors} seed(s)" if failed
                                          else "not applicable", anchor=_anchor(pipeline, bug, d)))
                    continue
                r = sub.loc[d]
                rate = _number(r.rate)
                rgba = CMAP(0.1 + 0.8 * rate) if rate is not None else (0.8, 0.8, 0.8, 1.0)
                row_cells.append(dict(
                    color=matplotlib.colors.to_hex(rgba), ink="#fff" if (rate or 0) > 0.5 else "#000",
                    caught=bool(r.caught), text=f"{r.detections}/{r.seeds}{' ✓' if r.caught else ''}",
                    title=f"{d}: rate {_fmt(r.rate, '.2f')}, clean {_fmt(r.clean_rate, '.2f')}, "
                          f"p {_fmt(r.p_value, '.3g')}" if bug != "clean"
                    else f"{d}: false-positive rate {_fmt(r.rate, '.2f')}",
                    anchor=_anchor(pipeline, bug, d)))
            rows.append(dict(bug=bug, anchor=_anchor(pipeline, bug), cells=row_cells))
            evidence.append(_evidence(pipeline, bug, runs, verdicts))
        pipelines.append(dict(name=pipeline, rows=rows))
    _render_figures(runs, evidence)
    env = Environment(autoescape=True)
    return env.from_string(TEMPLATE).render(
        meta={"command": meta.get("command", "?"), "provenance": meta.get("provenance", {})},
        detectors=detectors, pipelines=pipelines, evidence=evidence,
        impact_table=Markup(impact.round(4).to_html(index=False, border=0)),
        severity_png=severity_png(severity), unfinished=unfinished, headline=headline or [])


def _evidence(pipeline: str, bug: str, runs: pd.DataFrame, verdicts: pd.DataFrame) -> dict:
    v = verdicts[(verdicts.pipeline == pipeline) & (verdicts.variant == bug)]
    dets = []
    for d, g in v.groupby("detector", sort=True):
        counts = g.outcome.value_counts().to_dict()
        text = "\n".join(f"seed {r.seed}: {r.outcome} (score {_fmt(r.score, '.4g')}, {_fmt(r.steps, '.0f')} steps) "
                         f"{json.dumps({k: x for k, x in r.evidence.items() if k != 'dependency_map'}, sort_keys=True)}"
                         for r in g.itertuples())
        chart = next((r.evidence["dependency_map"] for r in g.itertuples()
                      if "dependency_map" in r.evidence and r.outcome == "flagged"), None)
        dets.append(dict(name=d, anchor=_anchor(pipeline, bug, d), text=text,
                         png=dependency_png(chart) if chart is not None else None,
                         summary=", ".join(f"{k} {n}" for k, n in sorted(counts.items()))))
    return dict(pipeline=pipeline, bug=bug, anchor=_anchor(pipeline, bug), detectors=dets)


def _figures(task: tuple) -> tuple:
    runs, pipeline, bug = task
    return curves_png(runs, pipeline, bug), filters_png(runs, pipeline, bug) if bug != "clean" else None


def _default_sigterm() -> None:
    """A forked drawing process ends on SIGTERM (how the pool stops it) instead of
    running the parent's handler, which turns SIGTERM into an interrupt."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _render_figures(runs: pd.DataFrame, evidence: list[dict]) -> None:
    """Draw every section's curves and filters, on two forked processes (matplotlib
    spends most of the report's time in savefig)."""
    import multiprocessing

    tasks = [(runs[(runs.pipeline == e["pipeline"]) & runs.variant.isin(["clean", e["bug"]])],
              e["pipeline"], e["bug"]) for e in evidence]
    with multiprocessing.get_context("fork").Pool(2, initializer=_default_sigterm) as pool:
        for e, (png, filters) in zip(evidence, pool.map(_figures, tasks)):
            e["png"], e["filters"] = png, filters

