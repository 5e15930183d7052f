"""gradleak entry point: `python run.py [-m] key=value ...` (see README.md)."""
import sys
from pathlib import Path

import hydra

from gradleak.jobs.preflight import preflight_or_exit
from gradleak.jobs.sweeps import end_interrupted_sweep, run_guarded

CONFIG_DIR = Path(__file__).resolve().parent / "conf"


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg) -> float | None:
    # Imported here: a process that only dispatches jobs (joblib, submitit) never needs it.
    from gradleak.jobs.job import run

    return run_guarded(run, cfg)


if __name__ == "__main__":
    preflight_or_exit(sys.argv[1:], CONFIG_DIR)
    try:
        main()
    finally:
        end_interrupted_sweep()
