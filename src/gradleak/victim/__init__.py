"""The victim side: what the attacker intercepts and what a defense costs.

data (real datasets as tensors) -> models (the victim) -> gradients (the shared gradient)
-> defenses (one module each, registered in defenses/__init__.py) -> clients (simulated
data-parallel workers, each defending its own gradient) -> training (defended training,
test accuracy against the cached undefended baseline, cache).
"""
