"""The bound DP-SGD puts on re-identification (report/dp_bound.py)."""
import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.stats import norm

from gradleak.report.dp_bound import bound_table, gaussian_mu, markdown_bound, reidentification_bound


@pytest.mark.fast
def test_the_bound_at_hand_computed_points():
    # Phi(Phi^-1(1/1000) + mu), Phi^-1(0.001) = -3.0902: mu = 0 is chance, then Phi(-2.0902), Phi(0.9098)
    assert reidentification_bound(0.0, 1000) == pytest.approx(0.001, rel=1e-9)
    assert reidentification_bound(gaussian_mu(1.0), 1000) == pytest.approx(0.01830, abs=1e-5)
    assert reidentification_bound(gaussian_mu(0.25), 1000) == pytest.approx(0.8185, abs=1e-4)
    assert reidentification_bound(gaussian_mu(0.0), 1000) == 1.0  # no noise: no bound


@pytest.mark.fast
def test_no_attacker_beats_the_bound_in_the_game_it_bounds():
    """The game in the open: each of N equally likely candidates moves the clipped sum by C = 1
    in a direction of its own, noise N(0, z^2) per entry. The best guess (the candidate whose
    direction the release leans to most) wins with P = integral phi(t - mu) Phi(t)^(N-1) dt; a
    simulation agrees, and the bound holds it from above without being loose by orders."""
    rng = np.random.default_rng(0)
    for n, z in ((10, 0.5), (100, 1.0), (1000, 0.25)):
        mu = gaussian_mu(z)
        exact = integrate.quad(lambda t, mu=mu, n=n: norm.pdf(t - mu) * norm.cdf(t) ** (n - 1), -10, 10 + mu)[0]
        releases = rng.normal(0, z, (4000, n))
        releases[:, 0] += 1.0  # the target is candidate 0 (the guess ignores the index)
        simulated = (releases.argmax(1) == 0).mean()
        assert simulated == pytest.approx(exact, abs=0.03)
        assert exact <= reidentification_bound(mu, n) < 3 * exact + 1 / n


@pytest.mark.fast
def test_a_measured_rate_above_the_bound_is_flagged():
    row = {"stage": "dpsgd", "family": "dpsgd", "strength": 0.5, "strength_rank": 0.5, "strength_label": "z=0.5 (C=1)",
           "attacker": "strongest", "reid_rate_attacker": "ig", "n_seeds": 3, "n_targets": 16, "epsilon": 9.9}
    table = pd.DataFrame([{**row, "reid_rate": 50.0, "reid_rate_lo": 36.4, "reid_rate_hi": 63.6},
                          {**row, "strength": 1.0, "strength_rank": 1.0, "strength_label": "z=1 (C=1)",
                           "reid_rate": 0.0, "reid_rate_lo": 0.0, "reid_rate_hi": 7.4}])
    bounds = bound_table(table, 1000)
    assert bounds["bound"].round(1).tolist() == [13.8, 1.8]
    assert bounds["within_bound"].tolist() == [False, True] and bounds["reidentified"].tolist() == [24, 0]
    text = markdown_bound(bounds, 1000)
    assert "| z=0.5 (C=1) | 2 | 13.8% | 24/48 = 50.0% [36.4–63.6] | ig | NO: a bug | 9.9 |" in text
