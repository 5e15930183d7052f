"""The readable end of a run: a short table of the key numbers and where everything is."""
from gradleak.jobs.tracking import run_url, ui_command

MAX_ROWS = 16


def format_summary(report: dict, out_dir, grid_path) -> str:
    a, cfg = report["attack"], report["config"]
    lines = [
        "",
        f"gradleak | dataset={cfg['dataset.name']} model={cfg['model.name']} {_defense(report)}"
        f" | {len(report['targets'])} targets x {cfg['attack.batch_size']} images"
        f" | {a['wall_s']:.1f} s on {report['device']}",
        f"{'target':>6} {'label':>7} {'pred':>7} {'MSE':>9} {'PSNR dB':>8} {'SSIM':>6} {'evals':>6}  result",
    ]
    for t in report["targets"][:MAX_ROWS]:
        result = "diverged" if t["diverged"] else ("leaked" if t["success"] else "failed")
        lines.append(f"{t['target']:>6} {_labels(t['label']):>7} {_labels(t['predicted']):>7}"
                     f" {t['mse']:9.2e} {t['psnr']:8.1f} {t['ssim']:6.3f} {t['evals']:>6}  {result}")
    if len(report["targets"]) > MAX_ROWS:
        lines.append(f"{'...':>6} ({len(report['targets']) - MAX_ROWS} more in metrics.json)")
    n = len(report["targets"])
    lines += [
        f"success (MSE < {cfg['attack.success_mse']:g}): {round(a['success_rate'] * n)}/{n}"
        f" ({a['success_rate']:.0%}) | MSE mean {a['mse_mean']:.2e} median {a['mse_median']:.2e}"
        f" | PSNR {a['psnr_mean']:.1f} dB | SSIM {a['ssim_mean']:.3f} | label acc {a['label_acc']:.0%}",
    ]
    if report.get("train"):
        tr = report["train"]
        lines.append(f"training ({cfg.get('train.name')}): test accuracy {tr['test_acc']:.2%}"
                     f" (undefended {tr['baseline_test_acc']:.2%}, utility drop {tr['utility_drop']:+.2%})"
                     f" in {tr['wall_s']:.0f} s")
    ml = report["mlflow"]
    lines += [
        f"metrics: {out_dir}/metrics.json",
        f"grid:    {grid_path}",
        f"mlflow:  run {ml['run_id']} in experiment '{ml['experiment']}' at {ml['tracking_uri']}",
        f"ui:      {ui_command(ml['tracking_uri'])}",
        f"         {run_url(ml['tracking_uri'], ml['experiment_id'], ml['run_id'])}",
    ]
    return "\n".join(lines)


def _defense(report: dict) -> str:
    """The defense and its knobs as the user spells them (defense=noise noise=gaussian scale=...)."""
    cfg = report["config"]
    knobs = [f"{k.removeprefix('defense.')}={v}" for k, v in cfg.items()
             if k.startswith("defense.") and k not in ("defense.name", "defense.variance")]
    return " ".join([f"defense={cfg['defense.name']}", *knobs, f"({report['defense']['strength_label']})"])


def _labels(labels: list[int]) -> str:
    return ",".join(map(str, labels)) if len(labels) <= 2 else f"{labels[0]},..."
