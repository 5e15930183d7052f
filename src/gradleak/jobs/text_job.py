"""One text job (task=text), the image job's protocol on sentences: corpus -> language victim
-> each sentence's update -> defense -> text attack -> verdicts -> record (metrics.json, the
recovered text, one MLflow run)."""
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gradleak.engine.reidentification import draw_distractors
from gradleak.job_record import JobRecord
from gradleak.jobs.tracking import log_training
from gradleak.report.text import marked
from gradleak.text.corpus import TextSplit, load_text_parts
from gradleak.text.verdicts import reid_ranks, rouge_f, summarize, token_accuracy
from gradleak.victim.defenses import defense_from_config

RECOVERED_TABLE = "recovered.json"  # the MLflow table artifact: truth and recovery per sentence


def run_text(cfg: DictConfig, who: dict, out_dir: Path, mlrun) -> JobRecord:
    """Attack num_targets sentences drawn by the seed; judge, write and log (`who` ran it)."""
    from gradleak.text.attack import run_text_attack
    from gradleak.text.victim import build_text_model

    parts = load_text_parts(cfg.dataset)
    split = parts[1]
    rows = draw_sentences(len(split), cfg)
    lengths = split.lengths[rows]
    ids = split.ids[rows, : int(lengths.max())]
    torch.manual_seed(cfg.seed)  # the victim's initial weights
    victim = build_text_model(cfg.model, split.vocab_size)
    outcome = run_text_attack(cfg.attack, victim, ids, lengths, defense_from_config(cfg.defense), cfg.seed,
                              cfg.trainer.accelerator)
    targets, chance = judge_text(outcome, rows, split, cfg)
    p = outcome.progress
    record = JobRecord(
        **who, device=outcome.device,
        attack={**summarize(targets, chance), "wall_s": outcome.wall_s, "round": None, "local_steps": 1,
                "split": "test", "moves": outcome.moves,
                **{f"stopped_{reason}": n for reason, n in outcome.stopped.items()}},
        targets=targets,
        curve={"step": p.step, "evals": p.evals, "loss_median": p.loss_median,
               "token_error_median": p.mse_median, "exact_rate": p.success_rate},
        snapshots={"file": "snapshots.json", "steps": p.snapshot_steps},
        grid="recovered.md",
    )
    snapshots = {str(step): [_text(split, s, n) for s, n in zip(frame, lengths.tolist())]
                 for step, frame in zip(p.snapshot_steps, p.snapshots)}
    (out_dir / "snapshots.json").write_text(json.dumps(snapshots, indent=1))
    (out_dir / "recovered.md").write_text(recovered_markdown(record))
    record.write(out_dir / "metrics.json")
    mlrun.log_metrics({k: v for k, v in record.attack.items() if isinstance(v, int | float)})
    mlrun.log_series({f"curve/{k}": record.curve[k] for k in ("loss_median", "token_error_median", "exact_rate")},
                     steps=p.step)
    mlrun.log_table({k: [t[k] for t in targets] for k in ("target", "truth", "recovered", "token_acc",
                                                          "success", "reidentified")}, RECOVERED_TABLE)
    for step, texts in snapshots.items():  # the recovered text along the continuous phase
        mlrun.log_text("\n".join(texts), f"snapshots/step_{int(step):05d}.txt")
    for name in ("recovered.md", "snapshots.json"):
        mlrun.log_artifact(out_dir / name)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    mlrun.log_artifact(out_dir / "config.yaml")
    if cfg.train.name != "none":  # the attack's record is written: kept if training fails
        from gradleak.text.training import run_text_training

        record.train = run_text_training(cfg, parts, logger=mlrun.lightning_logger())
        log_training(mlrun, record.train)
        record.write(out_dir / "metrics.json")
    return record


def draw_sentences(n_split: int, cfg) -> torch.Tensor:
    """The attacked sentences: a seeded draw of num_targets rows of the attacked split."""
    if cfg.attack.num_targets > n_split:
        from gradleak.checks import ConfigError
        raise ConfigError(f"attack.num_targets={cfg.attack.num_targets}: dataset={cfg.dataset.name} has {n_split}"
                          f" sentences of {cfg.dataset.min_tokens}-{cfg.dataset.max_tokens} tokens")
    return torch.randperm(n_split, generator=torch.Generator().manual_seed(cfg.seed))[: cfg.attack.num_targets]


def judge_text(outcome, rows: torch.Tensor, split: TextSplit, cfg) -> tuple[list[dict], float]:
    """Every verdict per sentence; returns (targets, re-identification's chance)."""
    acc = token_accuracy(outcome.recovered, outcome.truth, outcome.lengths)
    continuous = token_accuracy(outcome.continuous, outcome.truth, outcome.lengths)
    m = min(cfg.attack.distractors, len(split) - 1)
    pool = draw_distractors(len(split), m, cfg.seed + 1)
    recovered = [_text(split, r, n) for r, n in zip(outcome.recovered, outcome.lengths.tolist())]
    truth = [split.text(int(r)) for r in rows]
    texts = {int(i): split.text(int(i)) for i in torch.cat([pool, rows]).tolist()}
    ranks = reid_ranks(recovered, rows.tolist(), texts, pool, m)
    targets = []
    for t, row in enumerate(rows.tolist()):
        targets.append({
            "target": t, "index": [row], "truth": truth[t], "recovered": recovered[t],
            "length": int(outcome.lengths[t]), "token_acc": float(acc[t]), "success": bool(acc[t] == 1),
            "continuous_token_acc": float(continuous[t]),
            **{f"{k}_f": v for k, v in rouge_f(recovered[t], truth[t]).items()},
            "reid_rank": ranks[t], "reidentified": float(ranks[t] == 1), "distractors": m,
            "loss": outcome.loss[t], "discrete_match": outcome.discrete_match[t],
            "candidates": outcome.candidates[t], "evals": outcome.evals[t],
            "wrong": [i for i in range(int(outcome.lengths[t])) if outcome.recovered[t, i] != outcome.truth[t, i]],
        })
    return targets, 1.0 / (m + 1)


def _text(split: TextSplit, ids: torch.Tensor, length: int) -> str:
    return " ".join(split.words(ids[:length]))


def recovered_markdown(record: JobRecord) -> str:
    """Each true sentence over its recovery, wrong tokens struck through (the paper's text figure)."""
    lines = [f"# {' '.join(record.overrides) or 'task=text'}: recovered sentences", "",
             "| # | sentence | tokens right | exact | re-identified |", "|---|---|---|---|---|"]
    for t in record.targets:
        mark = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines.append(f"| {t['target']} | {mark(t['truth'])}<br>{mark(marked(t['recovered'], t['wrong']))} |"
                     f" {t['token_acc']:.0%} |"
                     f" {'yes' if t['success'] else 'no'} | rank {t['reid_rank']} of {t['distractors'] + 1} |")
    return "\n".join(lines) + "\n"
