"""What a sweep found, put on its parent run when the sweep ends (`review`, called by
sweeps.close_sweep in the launching process, also after failures or an interruption).

From the children's runs (and, for a resumed sweep, the FINISHED runs of earlier sweeps that
stand in for skipped jobs: the parent's `skipped.job<N>` tags) it logs on the parent:
- its description: the sweep's answer (per job, both verdicts with Wilson 95% intervals),
  then the table of children.md;
- children.md and children.csv: one row per child: its overrides, status, the
  re-identification rate and the exact-reconstruction rate (targets below
  attack.success_mse), each with a Wilson 95% interval over its targets, median MSE, label
  accuracy, test accuracy where trained;
- metrics: each verdict's rate and bounds per job (step = the job number, so the Model
  metrics tab plots them over the sweep) and the swept knobs as params;
- gallery.png: the final reconstructions of the same targets, one row per FINISHED child,
  named by its knobs and both verdicts;
- verdicts.png: the swept knob against both verdicts with their intervals (and test
  accuracy where trained);
- text sweeps (task=text): a token-accuracy column instead of MSE and label accuracy, and
  recovered.md: each job's first sentences over their recoveries.
Everything comes from the runs and their artifacts (metrics.json, snapshots.npz): no torch.
"""
import csv
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gradleak.intervals import wilson
from gradleak.job_record import JobRecord
from gradleak.jobs import tracking
from gradleak.report.text import marked

plt.switch_backend("agg")
NOTE_TAG = "mlflow.note.content"  # the run's description on its overview page (markdown)
NOTE_MAX = 8000  # MLflow's longest tag value on SQL stores
GALLERY_IMAGES = 8


@dataclass
class Child:
    run: object  # mlflow Run
    job: int | None
    earlier: bool  # a run of an earlier sweep that stands in for a skipped job
    metrics: JobRecord | None = None  # metrics.json
    final: np.ndarray | None = None  # [N, C, H, W] last snapshot
    truth: np.ndarray | None = None
    row: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run.data.tags.get("overrides", self.run.info.run_name or "") or "defaults"

    @property
    def finished(self) -> bool:
        return self.run.info.status == "FINISHED"


def review(client: MlflowClient, parent_id: str) -> list[dict]:
    """Log the sweep's table, gallery and figure on its parent run; returns the table's rows."""
    parent = client.get_run(parent_id)
    children = gather(client, parent)
    # no download progress bars between the jobs' summaries and the sweep's tally
    with tempfile.TemporaryDirectory(prefix="gradleak-review-") as tmp, \
            tracking.environ(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"):
        tmp = Path(tmp)
        for child in children:
            try:
                load(client, child, tmp / child.run.info.run_id)
            except (MlflowException, OSError, RuntimeError, ValueError) as exc:  # its row keeps the run's metrics
                print(f"warning: sweep summary: artifacts of run {child.run.info.run_id} not read"
                      f" ({type(exc).__name__}: {exc})".splitlines()[0], file=sys.stderr)
        knobs = swept_knobs(children)
        rows = [table_row(c) for c in children]
        out = tmp / "review"
        out.mkdir()
        md = markdown(rows, knobs, parent)
        (out / "children.md").write_text(md)
        write_csv(out / "children.csv", rows)
        done = [c for c in children if c.finished and c.final is not None]
        if done:
            gallery(out / "gallery.png", done, knobs)
        if any(r["exact_rate"] is not None for r in rows):
            knob_figure(out / "verdicts.png", children, knobs)
        if any(r.get("token_acc") is not None for r in rows):
            (out / "recovered.md").write_text(recovered_text(children, knobs))
        for path in sorted(out.iterdir()):
            client.log_artifact(parent_id, str(path))
    too_long = "The table is too long for a description: see children.md."
    note = answer(rows, knobs) + md
    client.set_tag(parent_id, NOTE_TAG, note if len(note) <= NOTE_MAX else
                   note[:note.index("\n\n", len(answer(rows, knobs))) + 2][:NOTE_MAX - len(too_long)] + too_long)
    log_numbers(client, parent_id, rows, knobs)
    if knobs:
        client.set_tag(parent_id, "swept", " ".join(knobs))
    attacked = {(d.dataset.name, d.dataset.digest): d for c in children for d in c.run.inputs.dataset_inputs}
    if attacked:  # the parent's row in the runs table says what the sweep attacked, too
        client.log_inputs(parent_id, datasets=list(attacked.values()))
    return rows


def gather(client: MlflowClient, parent) -> list[Child]:
    """The parent's own children (any status) and the earlier runs of skipped jobs, by job number."""
    own = tracking.search(client, parent.info.experiment_id,
                          f"tags.`{tracking.PARENT_TAG}` = '{parent.info.run_id}'")
    children = [Child(r, _int(r.data.tags.get(tracking.JOB_TAG)), False) for r in own]
    for key, run_id in parent.data.tags.items():
        if key.startswith(tracking.SKIPPED_TAG):
            children.append(Child(client.get_run(run_id), _int(key[len(tracking.SKIPPED_TAG):]), True))
    return sorted(children, key=lambda c: (c.job is None, c.job or 0, c.run.info.start_time or 0))


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def load(client: MlflowClient, child: Child, folder: Path) -> None:
    """metrics.json and the last snapshot of a FINISHED child (others may have neither)."""
    if not child.finished:
        return
    folder.mkdir(parents=True)
    names = {a.path for a in client.list_artifacts(child.run.info.run_id)}
    if "metrics.json" in names:
        path = client.download_artifacts(child.run.info.run_id, "metrics.json", str(folder))
        child.metrics = JobRecord.read(path)
    if "snapshots.npz" in names:
        path = client.download_artifacts(child.run.info.run_id, "snapshots.npz", str(folder))
        with np.load(path) as npz:
            if len(npz["recon"]):
                child.final, child.truth = npz["recon"][-1], npz["truth"]


def swept_knobs(children: list[Child]) -> list[str]:
    """The override keys whose values differ between children, in the order they are written."""
    parsed = [overrides(c.name) for c in children]
    keys = list(dict.fromkeys(k for p in parsed for k in p))
    return [k for k in keys if len({p.get(k) for p in parsed}) > 1]


def overrides(name: str) -> dict[str, str]:
    return dict(tok.split("=", 1) for tok in name.split() if "=" in tok)


def table_row(child: Child) -> dict:
    """One child as the table's row: numbers from metrics.json, else from the run's metrics."""
    run, m = child.run, child.metrics
    attack, train = (m.attack, m.train or {}) if m else ({}, {})
    targets = m.targets if m else []
    row = {"job": child.job, "overrides": child.name, "status": run.info.status,
           "from": "earlier sweep (resumed)" if child.earlier else "this sweep", "targets": len(targets) or None}
    n = len(targets)
    exact = sum(bool(t.get("success")) for t in targets) if n else None
    if not n and "success_rate" in run.data.metrics:  # metrics.json not read: the run's own numbers
        n = int(run.data.params.get("attack.num_targets", 0))
        exact = round(run.data.metrics["success_rate"] * n)
        row["targets"] = n or None
    if attack.get("reid_rate") is not None and n:  # a job that measured re-identification
        row.update(_rate("reidentified", "reid", round(attack["reid_rate"] * n), n))
    row.update(_rate("exact", "exact", exact, n))
    metrics = run.data.metrics
    row["mse_median"] = attack.get("mse_median", metrics.get("mse_median"))
    row["label_acc"] = attack.get("label_acc", metrics.get("label_acc"))
    row["token_acc"] = attack.get("token_acc", metrics.get("token_acc"))  # task=text
    row["test_acc"] = train.get("test_acc", metrics.get("train/test_acc"))
    row["utility_drop"] = train.get("utility_drop", metrics.get("utility_drop"))
    row["error"] = run.data.tags.get("error", "")
    row["run_id"] = run.info.run_id
    child.row = row
    return row


def _rate(count: str, prefix: str, k: int | None, n: int) -> dict:
    """{count: k, prefix_rate, prefix_lo, prefix_hi} (Wilson 95%), all None without k or n."""
    if k is None or not n:
        return {count: None, f"{prefix}_rate": None, f"{prefix}_lo": None, f"{prefix}_hi": None}
    lo, hi = wilson(k, n)
    return {count: k, f"{prefix}_rate": k / n, f"{prefix}_lo": lo, f"{prefix}_hi": hi}


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


COUNTS = {"reid": "reidentified", "exact": "exact"}


def _rate_cell(row: dict, prefix: str) -> str:
    if row.get(f"{prefix}_rate") is None:
        return "-"
    return (f"{row[COUNTS[prefix]]}/{row['targets']} = {_pct(row[f'{prefix}_rate'])}"
            f" [{_pct(row[f'{prefix}_lo'])}, {_pct(row[f'{prefix}_hi'])}]")


def answer(rows: list[dict], knobs: list[str]) -> str:
    """The sweep's answer in a line per job, before the table: re-identified first (the
    verdict defenses are judged by), then exact, each with its interval."""
    lines = []
    for r in rows:
        knob_values = overrides(r["overrides"])
        name = " ".join(f"{k}={knob_values[k]}" for k in knobs if k in knob_values) or r["overrides"] or "defaults"
        if r["exact_rate"] is None:
            lines.append(f"- `{name}`: {r['status'].lower()}, no verdict")
            continue
        reid = f"re-identified {_rate_cell(r, 'reid')}, " if r.get("reid_rate") is not None else ""
        lines.append(f"- `{name}`: {reid}exact {_rate_cell(r, 'exact')}")
    return "**Answer** (per job, Wilson 95% over its targets):\n\n" + "\n".join(lines) + "\n\n"


def log_numbers(client: MlflowClient, parent_id: str, rows: list[dict], knobs: list[str]) -> None:
    """Each verdict's rate and bounds as metrics (step = the job number, in sweep order) and
    the swept knobs as params, so the parent's metrics tab plots the verdicts over the sweep."""
    metrics = []
    for i, r in enumerate(rows):
        step = i if r["job"] is None else r["job"]
        for prefix in ("reid", "exact"):
            for end in ("rate", "lo", "hi"):
                value = r.get(f"{prefix}_{end}")
                if value is not None:
                    metrics.append(Metric(f"sweep/{COUNTS[prefix]}_{end}", float(value), 0, step))
        if r.get("test_acc") is not None:
            metrics.append(Metric("sweep/test_acc", float(r["test_acc"]), 0, step))
    if metrics:
        client.log_batch(parent_id, metrics=metrics)
    if knobs:
        values = {k: ",".join(dict.fromkeys(overrides(r["overrides"]).get(k, "-") for r in rows)) for k in knobs}
        try:
            client.log_batch(parent_id, params=[Param(f"sweep.{k}", v[:6000]) for k, v in values.items()])
        except MlflowException:  # already logged by an earlier review of this parent (params are fixed)
            pass


def markdown(rows: list[dict], knobs: list[str], parent) -> str:
    """The table as markdown: the overrides every job shares are said once, above it, and
    each swept knob gets a column (children.csv has every job's full overrides)."""
    finished = sum(r["status"] == "FINISHED" for r in rows)
    parsed = [overrides(r["overrides"]) for r in rows]
    common = [f"{k}={v}" for k, v in parsed[0].items() if k not in knobs] if parsed else []
    reid = any(r.get("reid_rate") is not None for r in rows)
    head = (f"**{parent.info.run_name}**: {len(rows)} jobs, {finished} finished"
            + (f"; swept: {', '.join(knobs)}" if knobs else "")
            + (f"; every job: `{' '.join(common)}`" if common else "")
            + ("; re-identified = the reconstruction's nearest test image (MSE) is its own" if reid else "")
            + ". Exact = targets reconstructed with MSE below attack.success_mse"
            + "; with a Wilson 95% interval over the job's targets."
            " Artifacts: children.csv, gallery.png, verdicts.png.")
    trained = any(r["test_acc"] is not None for r in rows)
    text = any(r.get("token_acc") is not None for r in rows)
    if text:
        head = head.replace("nearest test image (MSE)", "nearest test sentence (ROUGE-L)").replace(
            "targets reconstructed with MSE below attack.success_mse", "sentences with every token right").replace(
            "gallery.png", "recovered.md")
    columns = ["job", *(knobs or ["overrides"]), "status"] + (["re-identified [95% CI]"] if reid else []) \
        + ["exact reconstruction [95% CI]"] + (["token acc"] if text else ["median MSE", "label acc"]) \
        + (["test acc", "accuracy drop"] if trained else []) + ["run"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r, knob_values in zip(rows, parsed):
        status = r["status"] + (" (earlier sweep)" if r["from"] != "this sweep" else "")
        if r["error"]:
            status += f": {r['error'][:80]}"
        cells = ["-" if r["job"] is None else str(r["job"])]
        cells += [knob_values.get(k, "-") for k in knobs] if knobs else [f"`{r['overrides']}`"]
        cells += [status] + ([_rate_cell(r, "reid")] if reid else []) + [_rate_cell(r, "exact")]
        cells += [_pct(r.get("token_acc"))] if text else \
            ["-" if r["mse_median"] is None else f"{r['mse_median']:.2e}", _pct(r["label_acc"])]
        cells += [_pct(r["test_acc"]), "-" if r["utility_drop"] is None else f"{100 * r['utility_drop']:+.1f} pt"] \
            if trained else []
        cells.append(r["run_id"][:8])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return head + "\n\n" + "\n".join(lines) + "\n"


def recovered_text(children: list[Child], knobs: list[str], sentences: int = 4) -> str:
    """A text sweep's answer in words: each finished job's first sentences over their
    recoveries (wrong tokens struck through)."""
    lines = []
    for child in children:
        if child.metrics is None:
            continue
        lines += [f"## {' '.join(_label(child, knobs).splitlines())}", ""]
        for t in child.metrics.targets[:sentences]:
            lines += [f"- {t['truth']}", f"  {marked(t['recovered'], t['wrong'])} ({t['token_acc']:.0%} of tokens)"]
        lines.append("")
    return "\n".join(lines)


def _label(child: Child, knobs: list[str]) -> str:
    parsed = overrides(child.name)
    text = " ".join(f"{k}={parsed[k]}" for k in knobs if k in parsed) or child.name
    row = child.row
    if row.get("reid_rate") is not None:
        text += f"\nre-identified {row['reidentified']}/{row['targets']}"
    if row.get("exact_rate") is not None:
        text += f"\nexact {row['exact']}/{row['targets']}"
    return text


def gallery(path: Path, children: list[Child], knobs: list[str]) -> Path:
    """The children's final reconstructions of the same first targets, one row per child, under
    the ground truth (repeated where a child attacked other images, e.g. another dataset)."""
    rows, shown = [], None
    for child in children:
        truth = child.truth[:GALLERY_IMAGES]
        if shown is None or truth.shape != shown.shape or not np.array_equal(truth, shown):
            rows.append(("ground truth", truth))
            shown = truth
        rows.append((_label(child, knobs), child.final[:GALLERY_IMAGES]))
    cols = max(len(images) for _, images in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(0.9 * cols + 2.4, 0.9 * len(rows) + 0.4), squeeze=False)
    for i, (label, images) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([]), ax.set_yticks([])
            if j < len(images):
                img = np.clip(images[j], 0, 1)
                ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray", vmin=0, vmax=1,
                          interpolation="nearest")
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _x_knob(knobs: list[str], children: list[Child]) -> tuple[str | None, bool]:
    """The knob on the x axis and whether it is numeric: a numeric knob, else a categorical
    one, the seed only when nothing else varies (seeds are pooled into each line's mean)."""
    def numeric(key):
        try:
            [float(overrides(c.name).get(key)) for c in children]
            return True
        except (TypeError, ValueError):
            return False

    others = [k for k in knobs if k != "seed"]
    for key in others:
        if numeric(key):
            return key, True
    if others:
        return others[0], False
    return ("seed", numeric("seed")) if "seed" in knobs else (None, False)


def knob_figure(path: Path, children: list[Child], knobs: list[str]) -> Path:
    """Both verdicts (re-identified: squares, dashed; exact: circles, solid; Wilson 95% bars)
    against the swept knob, one colour per setting of the other knobs (seeds pooled into the
    line's mean), and test accuracy beside them where trained."""
    rated = [c for c in children if c.row.get("exact_rate") is not None]
    x_key, numeric = _x_knob(knobs, rated)
    others = [k for k in knobs if k not in (x_key, "seed")]
    if x_key is None:
        positions = {c.name: i for i, c in enumerate(rated)}
    else:
        order = list(dict.fromkeys(overrides(c.name).get(x_key, "-") for c in rated))  # categories: as run
        positions = {v: float(v) if numeric else i for i, v in enumerate(order)}

    def x_of(c):
        return positions[c.name] if x_key is None else positions[overrides(c.name).get(x_key, "-")]

    trained = [c for c in rated if c.row.get("test_acc") is not None]
    fig, axes = plt.subplots(1, 2 if trained else 1, figsize=(10 if trained else 5.5, 3.8), squeeze=False)
    groups = {}
    for c in rated:
        knobs_of = overrides(c.name)
        groups.setdefault(" ".join(f"{k}={knobs_of[k]}" for k in others if k in knobs_of), []).append(c)
    verdicts = (("reid", "re-identified", "s", "--"), ("exact", "exact", "o", "-"))
    for g, (label, members) in enumerate(groups.items()):
        color = f"C{g % 10}"
        for prefix, name, marker, line in verdicts:
            rated_here = sorted((c for c in members if c.row.get(f"{prefix}_rate") is not None), key=x_of)
            if rated_here:
                _rates(axes[0, 0], rated_here, x_of, prefix, color, marker, line, f"{label} {name}".strip())
        if trained:
            accurate = sorted((c for c in members if c.row.get("test_acc") is not None), key=x_of)
            xs, ys = np.array([x_of(c) for c in accurate]), np.array([c.row["test_acc"] for c in accurate])
            axes[0, 1].plot(xs, ys, "o", color=color)
            axes[0, 1].plot(*zip(*[(x, ys[xs == x].mean()) for x in dict.fromkeys(xs)]), "-", color=color,
                            label=label or None)
    axes[0, 0].set_title("re-identified and exact reconstruction (Wilson 95%)", fontsize=10)
    axes[0, 0].set_ylim(-0.05, 1.05)
    if trained:
        axes[0, 1].set_title("test accuracy", fontsize=10)
    for ax in axes[0]:
        ax.set_xlabel(x_key or "job")
        if numeric and min(positions.values()) > 0 and max(positions.values()) / min(positions.values()) >= 100:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(list(positions.values()), list(positions), rotation=20, fontsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _rates(ax, children: list[Child], x_of, prefix: str, color, marker: str, line: str, label: str) -> None:
    """One verdict's rates with their Wilson bars, and the line through their mean per x."""
    xs = np.array([x_of(c) for c in children])
    ys = np.array([c.row[f"{prefix}_rate"] for c in children])
    err = np.array([[c.row[f"{prefix}_rate"] - c.row[f"{prefix}_lo"] for c in children],
                    [c.row[f"{prefix}_hi"] - c.row[f"{prefix}_rate"] for c in children]])
    ax.errorbar(xs, ys, yerr=err, fmt=marker, color=color, capsize=3, alpha=0.8)
    ax.plot(*zip(*[(x, ys[xs == x].mean()) for x in dict.fromkeys(xs)]), line, color=color, label=label)
