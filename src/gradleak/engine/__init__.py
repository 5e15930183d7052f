"""The attacker: K independent reconstruction problems optimized together.

problems (flat variables, the chunked objective) -> objective (the gradient match,
vectorized) -> optimizers (batched L-BFGS / Adam) -> attack (restarts, the kept restart,
progress, run by Lightning); labels holds the label rules, quality the reconstruction
metrics, published the literal published DLG loop (the baseline of bench and tests).
"""
