"""The (epsilon, delta) guarantee of a DP-SGD training run, from Opacus's accountant.

The accounting is Opacus's for its own DP-SGD: Poisson sampling at `sample_rate` (the global
batch over the train images), `steps` noisy steps with noise multiplier z. Every client adds
N(0, (z C)^2) to its clipped sum and each sample is in one client's batch, so the guarantee
holds against a server that sees every client's update.
"""
ACCOUNTANTS = ("rdp", "prv")


def privacy_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                  accountant: str = "rdp") -> dict:
    """What metrics.json's train block records; epsilon is None without noise (no guarantee)."""
    epsilon = None
    if noise_multiplier > 0:
        from opacus.accountants import create_accountant  # heavy: only for DP-SGD runs

        acc = create_accountant(accountant)
        acc.history = [(noise_multiplier, sample_rate, steps)]
        epsilon = float(acc.get_epsilon(delta=delta))
    return {"epsilon": epsilon, "delta": delta, "sample_rate": sample_rate, "steps": steps,
            "noise_multiplier": noise_multiplier, "accountant": accountant}
