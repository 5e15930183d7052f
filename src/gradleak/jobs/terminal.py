"""The readable end of a run: a short table of the key numbers and where everything is."""
from gradleak.job_record import JobRecord
from gradleak.jobs.tracking import run_url, ui_command
from gradleak.report.text import marked

MAX_ROWS = 16


def format_summary(record: JobRecord, out_dir, grid_path) -> str:
    a, cfg = record.attack, record.config
    lines = [
        "",
        f"gradleak | dataset={cfg['dataset.name']} model={cfg['model.name']} {_defense(record)}"
        f" | attacker {record.attacker}"
        f" | {len(record.targets)} targets x {cfg['attack.batch_size']} images"
        f"{_aggregated(cfg)} | {a['wall_s']:.1f} s on {record.device}",
        *_attacked(a),
        f"{'target':>6} {'image':>6} {'label':>7} {'pred':>7} {'MSE':>9} {'PSNR dB':>8} {'SSIM':>6}"
        f" {'evals':>6}  {'exact':>5} {'re-id rank':>10}  stopped",
    ]
    for t in record.targets[:MAX_ROWS]:
        exact = "div." if t["diverged"] else ("yes" if t["success"] else "no")
        rank = f"{t['reid_rank']}/{t['distractors'] + 1}"
        lines.append(f"{t['target']:>6} {_labels(t['index']):>6} {_labels(t['label']):>7}"
                     f" {_labels(t['predicted']):>7} {t['mse']:9.2e} {t['psnr']:8.1f} {t['ssim']:6.3f}"
                     f" {t['evals']:>6}  {exact:>5} {rank:>10}  {t.get('stop_reason', '')}")
    if len(record.targets) > MAX_ROWS:
        lines.append(f"{'...':>6} ({len(record.targets) - MAX_ROWS} more in metrics.json)")
    lines += [
        _verdict(f"exact reconstruction (MSE < {cfg['attack.success_mse']:g})", a, "success_rate"),
        _verdict(f"re-identified (rank 1 of 1 + {record.targets[0]['distractors']} {a.get('split', 'test')} images,"
                 f" chance {a['reid_chance']:.1%})", a, "reid_rate", per_target=cfg["attack.batch_size"]),
        f"MSE mean {a['mse_mean']:.2e} median {a['mse_median']:.2e} | PSNR median {a['psnr_median']:.1f} dB"
        f" | SSIM mean {a['ssim_mean']:.3f} | label acc {a['label_acc']:.0%}",
    ]
    stopped = {k.removeprefix("stopped_"): v for k, v in a.items() if k.startswith("stopped_") and v}
    if stopped:
        lines.append("problems ended: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stopped.items())
                     + f" (of {sum(stopped.values())}: targets x restarts)")
    lines += training_lines(record, "test accuracy")
    ml = record.mlflow
    lines += [
        f"metrics: {out_dir}/metrics.json",
        f"grid:    {grid_path}",
        f"mlflow:  run {ml['run_id']} in experiment '{ml['experiment']}' at {ml['tracking_uri']}",
        f"ui:      {ui_command(ml['tracking_uri'])}",
        f"         {run_url(ml['tracking_uri'], ml['experiment_id'], ml['run_id'])}",
    ]
    return "\n".join(lines)


def _attacked(a: dict) -> list[str]:
    """Which update was attacked, when it is a training round's (attack.round)."""
    if a.get("round") is None:
        return []
    return [f"attacked: round {a['round']} of the training, each target one client's defended update "
            f"on its train batch ({a['local_steps']} local step{'s' * (a['local_steps'] > 1)})"]


def _defense(record: JobRecord) -> str:
    """The defense and its knobs as the user spells them (defense=noise noise=gaussian scale=...)."""
    cfg = record.config
    knobs = [f"{k.removeprefix('defense.')}={v}" for k, v in cfg.items()
             if k.startswith("defense.") and k not in ("defense.name", "defense.variance")]
    return " ".join([f"defense={cfg['defense.name']}", *knobs, f"({record.defense['strength_label']})"])


def _aggregated(cfg: dict) -> str:
    if cfg.get("aggregation.name") != "secure":
        return ""
    return f" (secure aggregation: the mean of {cfg['attack.batch_size']} clients' defended updates)"


def _verdict(name: str, a: dict, rate: str, per_target: int = 1) -> str:
    """`per_target` images per target: each target scores the share of its images that pass,
    and the interval is over the targets (engine/quality.py:summarize_targets)."""
    n = a["n_targets"]
    hits = f"{round(a[rate] * n)}/{n}" if per_target == 1 else \
        f"{round(a[rate] * n * per_target)}/{n * per_target} images of {n} targets"
    return f"{name}: {hits} ({a[rate]:.0%}, 95% Wilson {a[f'{rate}_lo']:.0%}-{a[f'{rate}_hi']:.0%})"


def _labels(labels: list[int]) -> str:
    return ",".join(map(str, labels)) if len(labels) <= 2 else f"{labels[0]},..."


def training_lines(record: JobRecord, utility: str) -> list[str]:
    """What the defended training cost (`utility`: what its test_acc measures), and DP-SGD's epsilon."""
    tr = record.train
    if not tr:
        return []
    lines = [f"training ({record.config.get('train.name')}): {utility} {tr['test_acc']:.2%}"
             f" (undefended {tr['baseline_test_acc']:.2%}, utility drop {tr['utility_drop']:+.2%})"
             f" in {tr['wall_s']:.0f} s"]
    if "epsilon" in tr:
        eps = "none (no noise)" if tr["epsilon"] is None else f"{tr['epsilon']:.3g}"
        lines.append(f"privacy ({tr['accountant']}): epsilon {eps} at delta {tr['delta']:g}"
                     f" (noise multiplier {tr['noise_multiplier']:g}, sample rate {tr['sample_rate']:.2g},"
                     f" {tr['steps']} steps)")
    return lines


def format_text_summary(record: JobRecord, out_dir) -> str:
    """task=text: each sentence over its recovery (wrong tokens in [brackets]) and the verdicts."""
    a, cfg = record.attack, record.config
    lines = [
        "",
        f"gradleak | task=text dataset={cfg['dataset.name']} model={cfg['model.name']} {_defense(record)}"
        f" | attacker {record.attacker} | {len(record.targets)} sentences x 1"
        f" | {a['wall_s']:.1f} s on {record.device}",
    ]
    for t in record.targets[:MAX_ROWS]:
        lines += [f"{t['target']:>3} true:      {t['truth']}",
                  f"{'':>3} recovered: {marked(t['recovered'], t['wrong'], '[', ']')}",
                  f"{'':>3}            tokens {t['token_acc']:.0%} | ROUGE-L {t['rougeL_f']:.2f}"
                  f" | {'exact' if t['success'] else 'not exact'} | re-id rank {t['reid_rank']}/{t['distractors'] + 1}"]
    if len(record.targets) > MAX_ROWS:
        lines.append(f"... ({len(record.targets) - MAX_ROWS} more in metrics.json)")
    n = a["n_targets"]
    lines += [
        f"token accuracy: {a['token_acc']:.1%} (95% t {a['token_acc_lo']:.1%}-{a['token_acc_hi']:.1%}, n={n})"
        f" | ROUGE-1 {a['rouge1_f']:.3f} ROUGE-2 {a['rouge2_f']:.3f} ROUGE-L {a['rougeL_f']:.3f}",
        _verdict("exact sentence (every token right)", a, "success_rate"),
        _verdict(f"re-identified (rank 1 of 1 + {record.targets[0]['distractors']} test sentences by ROUGE-L,"
                 f" chance {a['reid_chance']:.1%})", a, "reid_rate"),
        *training_lines(record, "held-out masked-token accuracy"),
    ]
    ml = record.mlflow
    lines += [
        f"metrics:   {out_dir}/metrics.json",
        f"recovered: {out_dir}/{record.grid}",
        f"mlflow:    run {ml['run_id']} in experiment '{ml['experiment']}' at {ml['tracking_uri']}",
        f"ui:        {ui_command(ml['tracking_uri'])}",
    ]
    return "\n".join(lines)
