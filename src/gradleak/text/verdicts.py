"""Verdicts for text, mirroring the image side's, per attacked sentence.

- token accuracy: the share of positions whose recovered token is the true one;
- exact sentence: every token right;
- ROUGE-1, ROUGE-2 and ROUGE-L F1 (rouge-score, no stemming; its tokenizer keeps words and
  drops punctuation) of the recovered text against the true one;
- re-identification: the true sentence ranked first among itself and M distractor sentences
  of the same split by ROUGE-L F1 to the recovered text (ties count in the recovery's
  favour, as for images); chance is 1 / (M + 1).
Rates over sentences carry Wilson intervals (gradleak.intervals), token accuracy a t interval
over sentences.
"""
from functools import cache

import numpy as np
import torch
from scipy import stats

from gradleak.intervals import wilson

ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


@cache
def _scorer():
    """rouge-score's scorer, made once (it logs through absl: made after the job quiets it)."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_KEYS), use_stemmer=False)


def rouge_f(recovered: str, truth: str) -> dict[str, float]:
    scores = _scorer().score(truth, recovered)
    return {k: scores[k].fmeasure for k in ROUGE_KEYS}


def token_accuracy(recovered: torch.Tensor, truth: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[T, L] ids each, lengths [T] -> [T] share of the sentence's positions right."""
    valid = torch.arange(truth.shape[1]) < lengths[:, None]
    return ((recovered == truth) & valid).sum(1) / lengths


def reid_ranks(recovered: list[str], truth_rows: list[int], split_texts: list[str], pool: torch.Tensor,
               m: int) -> list[int]:
    """Rank of each true sentence among itself and its first m distractors of `pool` (rows of
    the split, itself skipped) by ROUGE-L F1 to its recovered text; 1 = re-identified."""
    ranks = []
    for text, row in zip(recovered, truth_rows):
        others = [int(i) for i in pool if int(i) != row][:m]
        scorer = _scorer()
        own = scorer.score(split_texts[row], text)["rougeL"].fmeasure
        closer = sum(scorer.score(split_texts[i], text)["rougeL"].fmeasure > own + 1e-12 for i in others)
        ranks.append(1 + closer)
    return ranks


def summarize(targets: list[dict], chance: float) -> dict[str, float]:
    """The job's text verdicts: rates with Wilson intervals, means of token accuracy and ROUGE."""
    n = len(targets)
    out = {"n_targets": n, "reid_chance": chance}
    for rate, key in (("success_rate", "success"), ("reid_rate", "reidentified")):
        hits = sum(bool(t[key]) for t in targets)
        out[rate] = hits / n
        out[f"{rate}_lo"], out[f"{rate}_hi"] = wilson(hits, n)
    acc = np.array([t["token_acc"] for t in targets])
    out["token_acc"] = float(acc.mean())
    half = float(stats.t.ppf(0.975, n - 1) * acc.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    out["token_acc_lo"], out["token_acc_hi"] = max(0.0, out["token_acc"] - half), min(1.0, out["token_acc"] + half)
    for k in ROUGE_KEYS:
        out[f"{k}_f"] = float(np.mean([t[f"{k}_f"] for t in targets]))
    return out
