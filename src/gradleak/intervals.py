"""The Wilson score interval of a rate, the one every table, summary and figure uses (scipy's).
Torch-free, so that the report package can use it."""
import math

from scipy.stats import binomtest

CONFIDENCE = 0.95


def wilson(k: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of the rate k / n (k rounded: a share of a target's images);
    NaN bounds when n = 0."""
    if n == 0:
        return math.nan, math.nan
    ci = binomtest(int(round(k)), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)
