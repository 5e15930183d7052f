"""Checks before work: every job of a run or sweep is composed and validated up front, so a
user mistake costs one line on stderr and exit code 2, never a traceback or a stray run.

Beyond the config itself: each dataset loads, the output folder takes files, and the
tracking store answers (a tracking server within PROBE_TIMEOUT_S, not after minutes of
MLflow's retries)."""
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradleak.checks import ConfigError
from gradleak.jobs import tracking
from gradleak.jobs.config import validate
from gradleak.jobs.hydra_cli import expand_sweep, parse_command_line, parse_overrides, sweeper_params
from gradleak.text.schema import validate_text
from gradleak.victim.data import DatasetError, load_split

PROBE_TIMEOUT_S = 10


def preflight_or_exit(argv: list[str], config_dir: Path) -> None:
    try:
        preflight(argv, config_dir)
    except (ConfigError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def preflight(argv: list[str], config_dir: Path) -> int:
    """Validate every job `python run.py argv` would start; returns the number of jobs."""
    args = parse_command_line(argv)
    if args.help or args.hydra_help or args.info or args.shell_completion:
        return 0
    user = [o for o in args.overrides if not o.split("=")[0].lstrip("+~").startswith("hydra")]
    hydra_overrides = [o for o in args.overrides if o not in user]
    parsed = _parse(user)
    conf = ConfTree(config_dir)
    for o in parsed:
        if o.is_sweep_override() and not args.multirun:
            raise ConfigError(f"{o.input_line}: a list of values is a sweep; add -m to run one job each")
        conf.check_group_values(o)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        if args.multirun and any(o.key_or_group == "experiment" for o in parsed):
            # the experiment's grid (its hydra.sweeper.params) comes before the command line's
            fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
            grid = sweeper_params(_compose(fixed + hydra_overrides, with_hydra=True))
            user, parsed = grid + user, _parse(grid) + parsed
        jobs = expand_sweep(parsed) if args.multirun else [user]
        checked_data, uris = {}, set()
        for job in jobs:
            conf.check_knobs(job)
            cfg = _compose(job)
            if cfg.get("task") == "text":
                validate_text(cfg)
                _check_text(cfg, checked_data)
            else:
                validate(cfg)
                _check_data(cfg, checked_data)
            uris.add((tracking.tracking_uri(cfg), cfg.tracking.experiment))
        with_hydra = _compose(jobs[0] + hydra_overrides, with_hydra=True)
    GlobalHydra.instance().clear()
    _check_places(with_hydra, "hydra.sweep.dir" if args.multirun else "hydra.run.dir", uris, user)
    return len(jobs)


def _parse(overrides: list[str]):
    try:
        return parse_overrides(overrides)
    except HydraException as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None


def _compose(job: list[str], with_hydra: bool = False):
    try:
        return compose(config_name="config", overrides=job, return_hydra_config=with_hydra)
    except (HydraException, OmegaConfBaseException) as exc:
        text = str(exc)
        missing = re.search(r"Could not find '(.+)/([^/']+)'", text)
        options = re.search(r"Available options in '[^']+':\n((?:\t.*\n?)+)", text)
        if missing and options:  # e.g. hydra/launcher=joblb
            group, option = missing.groups()
            raise ConfigError(f"{group}={option}: unknown option; allowed {group}="
                              + "|".join(options.group(1).split())) from None
        for o in job:
            key = o.split("=")[0]
            if f"Could not override '{key}'" in text or f"Key '{key}'" in text:
                part = "hydra" if key.startswith("hydra.") else "job"
                raise ConfigError(f"{o}: unknown key '{key}' (python run.py --cfg {part} lists the keys)") from None
        raise ConfigError(" ".join(text.split())) from None


def _check_data(cfg, checked: dict) -> None:
    """Each distinct dataset once: present (or downloadable), readable, and big enough for
    the attack; its training split too when the job trains (`checked`: its size, by dataset),
    and then each job's attack.round against its training run's steps."""
    key = (str(cfg.dataset), cfg.attack.num_targets * cfg.attack.batch_size, cfg.train.name != "none")
    if key not in checked:
        test = load_split(cfg.dataset, "test")
        need = key[1]
        if need > len(test):
            raise ConfigError(f"attack.num_targets={cfg.attack.num_targets}: dataset={cfg.dataset.name} has"
                              f" {len(test)} test images; allowed num_targets * batch_size <= {len(test)}")
        checked[key] = len(load_split(cfg.dataset, "train")) if key[2] else None
    if cfg.attack.round is not None:  # validate(): only with a train profile
        _check_round(cfg, checked[key])


def _check_text(cfg, checked: dict) -> None:
    """Each distinct text dataset once: readable, and with enough sentences for the attack."""
    from gradleak.text.corpus import load_text

    key = str(cfg.dataset)
    if key not in checked:
        checked[key] = len(load_text(cfg.dataset))
    if cfg.attack.num_targets > checked[key]:
        raise ConfigError(f"attack.num_targets={cfg.attack.num_targets}: dataset={cfg.dataset.name} has"
                          f" {checked[key]} sentences of {cfg.dataset.min_tokens}-{cfg.dataset.max_tokens} tokens"
                          f" to attack; allowed num_targets <= {checked[key]}")


def _check_round(cfg, n_train: int) -> None:
    """attack.round is a step of the job's training run (its replay stops there), not a
    traceback after training and replaying the whole run."""
    from gradleak.victim.training import training_steps  # Lightning: only when training

    steps = training_steps(cfg, n_train)
    if cfg.attack.round >= steps:
        allowed = (f"allowed attack.round=0..{steps - 1}" if steps else
                   f"train.batch_size={cfg.train.batch_size} is more than its train images")
        raise ConfigError(f"attack.round={cfg.attack.round}: train={cfg.train.name} on dataset={cfg.dataset.name}"
                          f" has {steps} training steps; {allowed}")


def _check_places(cfg, out_key: str, uris: set, user: list[str]) -> None:
    """Where the work goes: the output folder, and the tracking store of each job."""
    out_dir = _output_dir(cfg, out_key)
    _check_writable(f"{out_key}={out_dir}", out_dir)
    uri_key = _uri_key(user)
    for uri, experiment in sorted(uris):
        _check_tracking(uri, experiment, uri_key)


def _output_dir(cfg, key: str) -> str:
    """The job or sweep folder; where it interpolates what only a launched job knows, the
    fixed part before that."""
    try:
        return str(OmegaConf.select(cfg, key, throw_on_resolution_failure=True))
    except OmegaConfBaseException:
        raw = OmegaConf.to_container(cfg.hydra, resolve=False)[key.split(".")[1]]["dir"]
        return raw.split("${")[0] or "."


def _check_writable(setting: str, folder: str) -> None:
    """The nearest existing folder on the way to `folder` must take a new file: a real
    write, because permission bits say nothing about root or read-only mounts."""
    path = Path(folder).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot write in {existing} ({exc.strerror}); choose a"
                          " writable folder") from None


def _uri_key(overrides: list[str]) -> str:
    """How the user set the tracking URI, to name it in messages."""
    if any(o.startswith("tracking.uri=") for o in overrides) or "MLFLOW_TRACKING_URI" not in os.environ:
        return "tracking.uri"
    return "MLFLOW_TRACKING_URI"


def _check_tracking(uri: str, experiment: str, key: str) -> None:
    if uri.startswith("sqlite:///"):
        _check_writable(f"{key}={uri}", str(Path(uri[len("sqlite:///"):]).parent))
    elif uri.startswith(("http://", "https://")):
        # MLflow's own timeout, when set lower, is the user's (and the tests') to choose.
        timeout_s = min(PROBE_TIMEOUT_S, int(os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", PROBE_TIMEOUT_S)))
        try:
            tracking.ping(uri, experiment, timeout_s)
        except Exception as exc:  # noqa: BLE001 - whatever stops the request, the server is unusable
            text = str(exc)
            if "error code 401" in text or "error code 403" in text:  # it answered: the login failed
                refused = "refused the login" if "401" in text else "denied this user access"
                raise ConfigError(f"{key}={uri}: the tracking server {refused}; set MLFLOW_TRACKING_USERNAME"
                                  " and MLFLOW_TRACKING_PASSWORD (docs/scaling.md)") from None
            raise ConfigError(f"{key}={uri}: no MLflow tracking server answered ({_why(text, timeout_s)});"
                              f" start it (README: Scaling out) or fix {key}") from None


def _why(text: str, timeout_s: int) -> str:
    for needle, reason in (("refused", "connection refused"), ("timed out", f"nothing within {timeout_s} s"),
                           ("resolve", "unknown host"), ("Name or service", "unknown host")):
        if needle in text:
            return reason
    return " ".join(text.split())[:200]


class ConfTree:
    """The config groups on disk: their options, defaults, and which option owns each knob."""

    def __init__(self, config_dir: Path):
        self.options = {d.name: sorted(p.stem for p in d.glob("*.yaml"))
                        for d in sorted(config_dir.iterdir()) if d.is_dir()}
        self.defaults = {}
        for entry in yaml.safe_load((config_dir / "config.yaml").read_text())["defaults"]:
            if isinstance(entry, dict):
                (group, option), = entry.items()
                self.defaults[group.replace("optional ", "")] = option
        self.knob_owner = {}  # knob -> (group, {options that define it})
        for group, options in self.options.items():
            for option in options:
                for knob in _global_keys(config_dir / group / f"{option}.yaml", group):
                    self.knob_owner.setdefault(knob, (group, set()))[1].add(option)

    def check_group_values(self, o) -> None:
        group = o.key_or_group
        if group not in self.options:
            return
        values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.value()]
        for v in values:
            if v not in self.options[group]:
                raise ConfigError(f"{group}={v}: unknown option; allowed {group}="
                                  + "|".join(self.options[group]))

    def check_knobs(self, job: list[str]) -> None:
        chosen = dict(self.defaults)
        chosen.update(o.split("=", 1) for o in job if o.split("=")[0] in self.options)
        for o in job:
            key = o.split("=")[0].lstrip("+")
            if key not in self.knob_owner:
                continue
            group, owners = self.knob_owner[key]
            if chosen.get(group) not in owners:
                own = " or ".join(f"{group}={x}" for x in sorted(owners))
                raise ConfigError(f"{o}: '{key}' exists only with {own}, but {group}={chosen.get(group)}"
                                  " is selected")


def _global_keys(path: Path, group: str) -> list[str]:
    text = path.read_text()
    if "# @package _global_" not in text:
        return []
    return [k for k in (yaml.safe_load(text) or {}) if k != group]
