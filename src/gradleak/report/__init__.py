"""The study's answer, from the collected CSVs alone (no torch): collect (metrics.json ->
summary, targets, curves CSVs) -> statistics (intervals over seeds) -> paper (the paper's
claims beside ours, the defense table) -> figures (seaborn)."""
