"""What a sweep found, put on its parent run when the sweep ends (`review`, called by
sweeps.close_sweep in the launching process, also after failures or an interruption).

From the children's runs (and, for a resumed sweep, the FINISHED runs of earlier sweeps that
stand in for skipped jobs: the parent's `skipped.job<N>` tags) it logs on the parent:
- children.md (rendered by the UI, and the run's description) and children.csv: one row per
  child: its overrides, status, leak rate (share of targets reconstructed below
  attack.success_mse) with a Wilson 95% interval over its targets, the re-identification rate
  where a job measured one, median MSE, label accuracy, test accuracy where trained;
- gallery.png: the final reconstructions of the same targets, one row per FINISHED child;
- leak_rate.png: the swept knob against the leak rate (and test accuracy where trained).
Everything comes from the runs and their artifacts (metrics.json, snapshots.npz): no torch.
"""
import csv
import json
import math
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from gradleak.intervals import wilson
from gradleak.jobs import tracking

plt.switch_backend("agg")
NOTE_TAG = "mlflow.note.content"  # the run's description on its overview page (markdown)
NOTE_MAX = 8000  # MLflow's longest tag value on SQL stores
GALLERY_IMAGES = 8


@dataclass
class Child:
    run: object  # mlflow Run
    job: int | None
    earlier: bool  # a run of an earlier sweep that stands in for a skipped job
    metrics: dict | None = None  # metrics.json
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
        if any(r["leak_rate"] is not None for r in rows):
            knob_figure(out / "leak_rate.png", children, knobs)
        for path in sorted(out.iterdir()):
            client.log_artifact(parent_id, str(path))
    too_long = "The table is too long for a description: see children.md."
    client.set_tag(parent_id, NOTE_TAG, md if len(md) <= NOTE_MAX else
                   md[:md.index("\n\n") + 2][:NOTE_MAX - len(too_long)] + too_long)
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
        child.metrics = json.loads(Path(path).read_text())
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
    run, m = child.run, child.metrics or {}
    attack, train = m.get("attack") or {}, m.get("train") or {}
    targets = m.get("targets") or []
    row = {"job": child.job, "overrides": child.name, "status": run.info.status,
           "from": "earlier sweep (resumed)" if child.earlier else "this sweep", "targets": len(targets) or None}
    n = len(targets)
    leaked = sum(bool(t.get("success")) for t in targets) if n else None
    if not n and "success_rate" in run.data.metrics:  # metrics.json not read: the run's own numbers
        n = int(run.data.params.get("attack.num_targets", 0))
        leaked = round(run.data.metrics["success_rate"] * n)
        row["targets"] = n or None
    row.update(_rate("leak", leaked, n))
    if attack.get("reid_rate") is not None and n:
        row.update(_rate("reid", round(attack["reid_rate"] * n), n))
    metrics = run.data.metrics
    row["mse_median"] = attack.get("mse_median", metrics.get("mse_median"))
    row["label_acc"] = attack.get("label_acc", metrics.get("label_acc"))
    row["test_acc"] = train.get("test_acc", metrics.get("train/test_acc"))
    row["utility_drop"] = train.get("utility_drop", metrics.get("utility_drop"))
    row["error"] = run.data.tags.get("error", "")
    row["run_id"] = run.info.run_id
    child.row = row
    return row


def _rate(prefix: str, k: int | None, n: int) -> dict:
    if k is None or not n:
        return {f"{prefix}ed": None, f"{prefix}_rate": None, f"{prefix}_lo": None, f"{prefix}_hi": None}
    lo, hi = wilson(k, n)
    return {f"{prefix}ed": k, f"{prefix}_rate": k / n, f"{prefix}_lo": lo, f"{prefix}_hi": hi}


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0%}"


def _rate_cell(row: dict, prefix: str) -> str:
    if row.get(f"{prefix}_rate") is None:
        return "-"
    return (f"{row[f'{prefix}ed']}/{row['targets']} = {_pct(row[f'{prefix}_rate'])}"
            f" [{_pct(row[f'{prefix}_lo'])}, {_pct(row[f'{prefix}_hi'])}]")


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
            + ". Exact = targets reconstructed with MSE below attack.success_mse"
            + ("; re-identified = the reconstruction's nearest test image (MSE) is its own" if reid else "")
            + "; with a Wilson 95% interval over the job's targets."
            " Artifacts: children.csv, gallery.png, leak_rate.png.")
    trained = any(r["test_acc"] is not None for r in rows)
    columns = ["job", *(knobs or ["overrides"]), "status", "exact reconstruction [95% CI]"] \
        + (["re-identified [95% CI]"] if reid else []) + ["median MSE", "label acc"] \
        + (["test acc", "accuracy drop"] if trained else []) + ["run"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r, knob_values in zip(rows, parsed):
        status = r["status"] + (" (earlier sweep)" if r["from"] != "this sweep" else "")
        if r["error"]:
            status += f": {r['error'][:80]}"
        cells = ["-" if r["job"] is None else str(r["job"])]
        cells += [knob_values.get(k, "-") for k in knobs] if knobs else [f"`{r['overrides']}`"]
        cells += [status, _rate_cell(r, "leak")]
        cells += [_rate_cell(r, "reid")] if reid else []
        cells += ["-" if r["mse_median"] is None else f"{r['mse_median']:.2e}", _pct(r["label_acc"])]
        cells += [_pct(r["test_acc"]), "-" if r["utility_drop"] is None else f"{100 * r['utility_drop']:+.1f} pt"] \
            if trained else []
        cells.append(r["run_id"][:8])
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return head + "\n\n" + "\n".join(lines) + "\n"


def _label(child: Child, knobs: list[str]) -> str:
    parsed = overrides(child.name)
    text = " ".join(f"{k}={parsed[k]}" for k in knobs if k in parsed) or child.name
    if child.row.get("leak_rate") is not None:
        text += f"\nleaked {child.row['leaked']}/{child.row['targets']}"
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
    """Leak rate (Wilson 95% intervals) against the swept knob, one line per setting of the other
    knobs (seeds pooled into the line's mean), and test accuracy beside it where trained."""
    rated = [c for c in children if c.row.get("leak_rate") is not None]
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
    panels = [("leak", "exact reconstruction (MSE < success_mse, Wilson 95%) and re-identified")]
    panels += [("test_acc", "test accuracy")] if trained else []
    groups = {}
    for c in rated:
        knobs_of = overrides(c.name)
        groups.setdefault(" ".join(f"{k}={knobs_of[k]}" for k in others if k in knobs_of), []).append(c)
    for ax, (metric, title) in zip(axes[0], panels):
        for g, (label, members) in enumerate(groups.items()):
            color = f"C{g % 10}"
            members = sorted((c for c in members if c.row.get(f"{metric}_rate" if metric == "leak" else metric)
                              is not None), key=x_of)
            if not members:
                continue
            xs = np.array([x_of(c) for c in members])
            if metric == "leak":
                ys = np.array([c.row["leak_rate"] for c in members])
                err = np.array([[c.row["leak_rate"] - c.row["leak_lo"] for c in members],
                                [c.row["leak_hi"] - c.row["leak_rate"] for c in members]])
                ax.errorbar(xs, ys, yerr=err, fmt="o", color=color, capsize=3, alpha=0.8)
                reid = [c for c in members if c.row.get("reid_rate") is not None]
                if reid:
                    ax.plot([x_of(c) for c in reid], [c.row["reid_rate"] for c in reid], "s--", color=color,
                            alpha=0.6, label=f"{label} re-identified".strip())
            else:
                ys = np.array([c.row["test_acc"] for c in members])
                ax.plot(xs, ys, "o", color=color)
            means = [(x, ys[xs == x].mean()) for x in dict.fromkeys(xs)]
            ax.plot(*zip(*means), "-", color=color, label=label or None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(x_key or "job")
        if metric == "leak":
            ax.set_ylim(-0.05, 1.05)
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
