"""Aggregates per setting with 95% intervals.

A setting is one stage, one set of overrides without the seed (the `setting` column of
summary.csv) and one attacker. Job-level numbers (test accuracy) get a t-interval over seeds; with
fewer than two finite values there is none (NaN bounds; tables and figures show none).
Verdicts are pooled over every attacked target of every seed (each seed draws its own
targets): rates get Wilson score intervals, medians percentile-bootstrap intervals.
"""
import numpy as np
import pandas as pd
from scipy import stats

from gradleak.intervals import CONFIDENCE, wilson

# A defense setting and how it is named (the naming columns are functions of the setting);
# SETTING_KEYS adds the attacker: what one row of the study's tables aggregates.
DEFENSE_KEYS = ["stage", "setting", "family", "family_title", "family_rank", "strength",
                "strength_label", "strength_rank", "variance"]
SETTING_KEYS = [*DEFENSE_KEYS, "attacker"]


def t_interval(values, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): Student-t interval for the mean of the finite values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.nan, np.nan, np.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, np.nan, np.nan
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return mean, mean - half, mean + half


def over_seeds(df: pd.DataFrame, metrics: list[str], by: list[str] | None = None) -> pd.DataFrame:
    """One row per group of `by` (default: the setting) with n_seeds and, per metric,
    the columns <metric> (mean), <metric>_lo and <metric>_hi."""
    by = [c for c in (by or SETTING_KEYS) if c in df]
    metrics = [m for m in metrics if m in df]
    rows = []
    for key, group in df.groupby(by, dropna=False, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = group["seed"].nunique() if "seed" in group else len(group)
        for m in metrics:
            row[m], row[f"{m}_lo"], row[f"{m}_hi"] = t_interval(group[m])
        rows.append(row)
    return pd.DataFrame(rows)


def errorbar(agg: pd.DataFrame, metric: str) -> np.ndarray:
    """[2, n] distances below and above the mean for matplotlib; 0 where no interval."""
    lo = (agg[metric] - agg[f"{metric}_lo"]).fillna(0).to_numpy()
    hi = (agg[f"{metric}_hi"] - agg[metric]).fillna(0).to_numpy()
    return np.vstack([lo, hi])


def curve_over_seeds(curves: pd.DataFrame, y: str, by: list[str]) -> pd.DataFrame:
    """Per group of `by` and optimizer step: mean evals, and the geometric mean of `y`
    over seeds with its 95% t-interval (computed on log10 y, so bands stay positive on a
    log axis). Columns: by, step, evals, y, y_lo, y_hi."""
    values = curves[y].astype(float).replace([np.inf, -np.inf], np.nan)
    df = curves.assign(_log=np.log10(values.clip(lower=np.finfo(float).tiny)))
    g = df.groupby(by + ["step"], dropna=False)
    out = g.agg(evals=("evals", "mean"), _mean=("_log", "mean"), _std=("_log", "std"),
                _n=("_log", "count")).reset_index()
    tq = stats.t.ppf(0.5 + CONFIDENCE / 2, (out["_n"] - 1).clip(lower=1))
    half = np.where(out["_n"] >= 2, tq * out["_std"] / np.sqrt(out["_n"]), np.nan)
    out[y], out[f"{y}_lo"], out[f"{y}_hi"] = (10 ** out["_mean"], 10 ** (out["_mean"] - half),
                                               10 ** (out["_mean"] + half))
    return out.drop(columns=["_mean", "_std", "_n"])


def bootstrap_median(values, confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high) of the finite values, percentile bootstrap (2,000 resamples)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return np.nan, np.nan, np.nan
    if x.size < 2 or np.all(x == x[0]):
        return float(np.median(x)), float(np.median(x)), float(np.median(x))
    res = stats.bootstrap((x,), np.median, confidence_level=confidence, n_resamples=2000,
                          method="percentile", random_state=seed)
    return float(np.median(x)), float(res.confidence_interval.low), float(res.confidence_interval.high)


RATES = {"success_rate": "success", "reid_rate": "reidentified"}  # rate: per-target column
MEDIANS = {"mse_median": "mse", "psnr_median": "psnr"}


def over_targets(targets: pd.DataFrame, by: list[str] | None = None) -> pd.DataFrame:
    """One row per group of `by` (default: the setting): n_seeds, n_targets (per seed), and
    both verdicts' rates over all its targets with Wilson intervals, MSE and PSNR medians
    with bootstrap intervals."""
    by = [c for c in (by or SETTING_KEYS) if c in targets]
    rows = []
    for key, group in targets.groupby(by, dropna=False, sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        seeds = group["seed"].nunique()
        row["n_seeds"], row["n_targets"] = seeds, len(group) // max(seeds, 1)
        for rate, col in RATES.items():
            if col in group:
                values = group[col].astype(float)
                row[rate] = values.mean()
                row[f"{rate}_lo"], row[f"{rate}_hi"] = wilson(values.sum(), len(values))
        for median, col in MEDIANS.items():
            row[median], row[f"{median}_lo"], row[f"{median}_hi"] = bootstrap_median(group[col])
        rows.append(row)
    return pd.DataFrame(rows)
