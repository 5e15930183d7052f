"""Running the study: config (the schema; values live in conf/) -> preflight (every job
checked before any work) -> job (one job's protocol) -> sweeps (parent run, resume,
failure isolation) -> tracking (MLflow) and outputs / terminal (what a job leaves and
prints). hydra_cli is the one adapter to Hydra's command-line internals."""
