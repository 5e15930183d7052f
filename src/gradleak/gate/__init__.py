"""The study gate: a behaviour fingerprint of the code the study runs (docs/fingerprint)."""
