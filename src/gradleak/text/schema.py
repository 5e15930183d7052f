"""The text task's config groups: types and ranges (values in conf/ only), and the rules
between them. Torch-free: preflight checks every job with it before any work."""
from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from gradleak.checks import ConfigError, check_schema, choice, fail, in_range
from gradleak.engine.schema import check_adaptive
from gradleak.engine.stopping import StopSchema

TEXT_MATCHES = ("l2", "cosine", "tag")
TEXT_DATASETS = ("bible", "textfile")
TEXT_MODELS = ("textlm", "textlm_wide")


@dataclass
class TextDataSchema:
    name: str = MISSING
    vocab_size: int = MISSING
    min_tokens: int = MISSING
    max_tokens: int = MISSING
    path: str | None = None

    def __post_init__(self):
        choice("dataset", self.name, TEXT_DATASETS)
        in_range("dataset.vocab_size", self.vocab_size, low=4)
        in_range("dataset.min_tokens", self.min_tokens, low=2)
        in_range("dataset.max_tokens", self.max_tokens, low=self.min_tokens)


@dataclass
class TextModelSchema:
    name: str = MISSING
    dim: int = MISSING
    layers: int = MISSING
    heads: int = MISSING
    hidden: int = MISSING
    max_len: int = MISSING
    tied: bool = MISSING

    def __post_init__(self):
        choice("model", self.name, TEXT_MODELS)
        for key in ("dim", "layers", "heads", "hidden", "max_len"):
            in_range(f"model.{key}", getattr(self, key), low=1)
        if self.dim % self.heads:
            fail("model.heads", self.heads, f"a divisor of model.dim={self.dim}")


@dataclass
class TextAttackSchema:
    name: str = MISSING
    num_targets: int = MISSING
    batch_size: int = MISSING
    restarts: int = MISSING
    steps: int = MISSING
    lr: float = MISSING
    max_iter: int = MISSING
    history_size: int = MISSING
    line_search: str = MISSING
    divergence_factor: float = MISSING
    match: str = MISSING
    tag_l1: float = MISSING
    bag_of_words: bool = MISSING
    discrete_steps: int = MISSING
    distractors: int = MISSING
    snapshots: int = MISSING
    adaptive: bool = MISSING
    stop: StopSchema = MISSING

    def __post_init__(self):
        for key in ("num_targets", "restarts", "max_iter", "history_size", "distractors"):
            in_range(f"attack.{key}", getattr(self, key), low=1)
        for key in ("steps", "discrete_steps", "snapshots"):
            in_range(f"attack.{key}", getattr(self, key), low=0)
        choice("attack.batch_size", self.batch_size, (1,))
        if self.steps == 0 and self.discrete_steps == 0:
            fail("attack.steps", 0, ">= 1 (or attack.discrete_steps >= 1): the attack needs a budget")
        choice("attack.line_search", self.line_search, ("none", "backtracking"))
        choice("attack.match", self.match, TEXT_MATCHES)
        in_range("attack.lr", self.lr, low=0, low_open=True)
        in_range("attack.tag_l1", self.tag_l1, low=0)
        in_range("attack.divergence_factor", self.divergence_factor, low=1, low_open=True)


@dataclass
class TextTrainSchema:
    """A text training profile (conf/train/text_*.yaml): FedSGD with `workers` clients,
    masking `mask_rate` of each sentence's positions; sizes in sentences."""
    name: str = MISSING
    workers: int = MISSING
    batch_size: int = MISSING
    epochs: int = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    mask_rate: float = MISSING
    max_train_sentences: int | None = MISSING
    max_test_sentences: int | None = MISSING
    cache_dir: str = MISSING
    delta: float = MISSING
    accountant: str = MISSING

    def __post_init__(self):
        from gradleak.victim.privacy import ACCOUNTANTS
        from gradleak.victim.train_schema import TRAIN_OPTIMIZERS

        for key in ("workers", "batch_size", "epochs"):
            in_range(f"train.{key}", getattr(self, key), low=1)
        if self.batch_size % self.workers:
            fail("train.batch_size", self.batch_size, f"a multiple of train.workers={self.workers}")
        choice("train.optimizer", self.optimizer, tuple(TRAIN_OPTIMIZERS))
        choice("train.accountant", self.accountant, ACCOUNTANTS)
        in_range("train.mask_rate", self.mask_rate, low=0, high=1, low_open=True)
        in_range("train.lr", self.lr, low=0, low_open=True)
        in_range("train.delta", self.delta, low=0, high=1, low_open=True, high_open=True)
        for key in ("max_train_sentences", "max_test_sentences"):
            if getattr(self, key) is not None:
                in_range(f"train.{key}", getattr(self, key), low=1)


def is_text_profile(train: DictConfig) -> bool:
    return "mask_rate" in train


def validate_text(cfg: DictConfig) -> None:
    """Each group of a task=text job, then the rules between them; one ConfigError line."""
    from gradleak.jobs.config import KNOBS, TopSchema
    from gradleak.victim.defenses import DEFENSES, knobs_of

    check_schema(TopSchema, {"seed": cfg.seed, "threads": cfg.threads, "resume": cfg.resume}, "")
    if cfg.dataset.name not in TEXT_DATASETS:
        fail("dataset", cfg.dataset.name, "with task=text: " + ", ".join(TEXT_DATASETS))
    if cfg.model.name not in TEXT_MODELS:
        fail("model", cfg.model.name, "with task=text: " + ", ".join(TEXT_MODELS))
    if "bag_of_words" not in cfg.attack:
        fail("attack", cfg.attack.name, "with task=text: text, text_tag, text_cosine")
    check_schema(TextDataSchema, cfg.dataset, "dataset.", KNOBS)
    check_schema(TextModelSchema, cfg.model, "model.", KNOBS)
    check_schema(TextAttackSchema, cfg.attack, "attack.", KNOBS)
    defense = DEFENSES[cfg.defense.name]
    check_schema(defense.schema, cfg.defense, "defense.", KNOBS)
    if defense.needs_data:
        raise ConfigError(f"defense={cfg.defense.name}: scores an image model's representation; not built for"
                          " task=text")
    if defense.encode is not None:
        raise ConfigError(f"defense={cfg.defense.name}: mixes images; not built for task=text")
    if defense.extend_model is not None:
        raise ConfigError(f"defense={cfg.defense.name}: extends an image model; not built for task=text")
    if cfg.get("aggregation") is not None:
        raise ConfigError(f"aggregation={cfg.aggregation.name}: task=text attacks one sentence's update"
                          " (attack.batch_size=1); drop aggregation=")
    if cfg.dataset.max_tokens > cfg.model.max_len:
        raise ConfigError(f"dataset.max_tokens={cfg.dataset.max_tokens}: longer than the model's positions;"
                          f" allowed dataset.max_tokens <= model.max_len={cfg.model.max_len}")
    if cfg.train.name != "none":
        if not is_text_profile(cfg.train):
            raise ConfigError(f"train={cfg.train.name}: an image training profile; with task=text allowed"
                              " train=none, text_smoke")
        check_schema(TextTrainSchema, cfg.train, "train.", KNOBS)
    check_adaptive(cfg.attack, cfg.defense.name, defense.adaptive(knobs_of(cfg.defense)), defense.per_sample)
