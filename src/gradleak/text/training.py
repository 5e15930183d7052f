"""Defended training of the text victim: what a defense costs a language model.

The image side's protocol (victim/training.py) on sentences: the workers of a global batch
each take the masked-LM gradient of their shard, defend it with the job's defense (the code
the attacker's update goes through, seeded per worker and step alike), and the server applies
their mean with the profile's optimizer. DP-SGD clips each sentence's gradient.

Training masks as BERT does: each position of a sentence becomes [MASK] with probability
train.mask_rate (at least one position per sentence) and the loss is the cross-entropy of the
true token at the masked positions. (The attacked update predicts every position of the
unmasked sentence, DLG's form at the initial weights; trained on that, a model only learns
to copy its input.) The utility is masked-token accuracy on held-out sentences: the corpus's
attacked part, which training never sees, at one fixed mask (MASK_SEED), so every run of the
dataset, defended or not, is scored on the same positions.
"""
import time
import warnings

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call, grad_and_value, vmap
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from gradleak.text.corpus import MASK, TextSplit
from gradleak.text.victim import MaskedLM, build_text_model, valid_positions
from gradleak.victim.cache import cached_json, content_hash
from gradleak.victim.clients import server_mean, worker_seed
from gradleak.victim.defenses import DEFENSES, defense_from_config
from gradleak.victim.privacy import privacy_spent
from gradleak.victim.train_schema import TRAIN_OPTIMIZERS
from gradleak.victim.training import CURVE_KEYS, log_epoch, replay_curve

CACHE_VERSION = 1  # bump when a change to text training changes its results
MASK_SEED = 0      # the held-out mask: the data's, not the job's
EVAL_BATCH = 500


def mask_positions(lengths: torch.Tensor, width: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """[N] lengths -> bool [N, width]: each position of a sentence masked with probability
    `rate`, and one drawn position of each sentence that got none."""
    valid = valid_positions(lengths, width)
    mask = (torch.rand(valid.shape, generator=generator) < rate) & valid
    forced = (torch.rand(len(lengths), generator=generator) * lengths).long()  # uniform over the sentence
    none = ~mask.any(1)
    mask[none, forced[none]] = True
    return mask


def sentence_loss(model: MaskedLM, params: dict, ids: torch.Tensor, mask: torch.Tensor,
                  valid: torch.Tensor) -> torch.Tensor:
    """One sentence [L]: the mean cross-entropy of its true tokens at the masked positions,
    read from the sentence with those positions replaced by [MASK]."""
    logits = functional_call(model, params, (torch.where(mask, MASK, ids), valid))
    per_position = F.cross_entropy(logits, ids, reduction="none")
    return (per_position * mask).sum() / mask.sum()


def worker_gradients(model: MaskedLM, ids, mask, valid, per_sample: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ids, mask, valid [W, b, L] -> (gradients [W, *p] per parameter, or [W, b, *p] per
    sentence with per_sample; each worker's loss [W]). A worker's loss is the mean of its
    sentences' losses."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def one(p, x, m, v):
        return sentence_loss(model, p, x, m, v)

    if per_sample:
        grads, losses = vmap(vmap(grad_and_value(one), in_dims=(None, 0, 0, 0)), in_dims=(None, 0, 0, 0))(
            params, ids, mask, valid)
        return list(grads.values()), losses.mean(1).detach()

    def shard(p, x, m, v):
        return vmap(one, in_dims=(None, 0, 0, 0))(p, x, m, v).mean()

    grads, losses = vmap(grad_and_value(shard), in_dims=(None, 0, 0, 0))(params, ids, mask, valid)
    return list(grads.values()), losses.detach()


@torch.no_grad()
def masked_accuracy(model: MaskedLM, ids: torch.Tensor, lengths: torch.Tensor,
                    mask: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of the true tokens at the masked positions of every sentence."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    valid = valid_positions(lengths, ids.shape[1])
    logits = torch.cat([vmap(lambda x, v: functional_call(model, params, (x, v)))(
        torch.where(m, MASK, x), v) for x, m, v in zip(ids.split(EVAL_BATCH), mask.split(EVAL_BATCH),
                                                        valid.split(EVAL_BATCH))])
    picked = mask.flatten()
    right = logits.argmax(-1).flatten()[picked] == ids.flatten()[picked]
    loss = F.cross_entropy(logits.flatten(0, 1)[picked], ids.flatten()[picked])
    return float(right.float().mean()), float(loss)


class DefendedTextTraining(pl.LightningModule):
    """Manual optimization: the server's averaged defended update is what the optimizer applies."""

    def __init__(self, model: MaskedLM, defense, train_cfg, seed: int, test: TextSplit, metrics_logger=None):
        super().__init__()
        self.model, self.defense, self.tcfg, self.seed = model, defense, train_cfg, seed
        self.metrics_logger = metrics_logger
        self.automatic_optimization = False
        self.masks = torch.Generator().manual_seed(seed)  # the training masks, drawn step by step
        self.test = test
        self.test_mask = mask_positions(test.lengths, test.ids.shape[1], train_cfg.mask_rate,
                                        torch.Generator().manual_seed(MASK_SEED))
        self.curve = {"epoch": [], **{k: [] for k in CURVE_KEYS}}

    def configure_optimizers(self):
        opt = TRAIN_OPTIMIZERS[self.tcfg.optimizer](self.model.parameters(), self.tcfg)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=self.tcfg.epochs)}

    def on_train_epoch_start(self):
        self._losses = []

    def training_step(self, batch, batch_idx):
        ids, lengths = batch
        ids = ids[:, : int(lengths.max())]
        mask = mask_positions(lengths.cpu(), ids.shape[1], self.tcfg.mask_rate, self.masks).to(ids.device)
        valid = valid_positions(lengths, ids.shape[1])
        shards = [t.reshape(self.tcfg.workers, -1, *t.shape[1:]) for t in (ids, mask, valid)]
        per_sample = getattr(self.defense, "per_sample", False)
        grads, losses = worker_gradients(self.model, *shards, per_sample=per_sample)
        defended = []
        for w in range(self.tcfg.workers):
            generator = torch.Generator(device=ids.device).manual_seed(worker_seed(self.seed, self.global_step, w))
            defended.append(self.defense([g[w] for g in grads], generator=generator, batch_dims=0))
        opt = self.optimizers()
        opt.zero_grad()
        for p, g in zip(self.model.parameters(), server_mean(defended)):
            p.grad = g
        opt.step()
        self._losses.append(losses.mean())

    def on_train_epoch_end(self):
        self.lr_schedulers().step()
        acc, loss = masked_accuracy(self.model, *(t.to(self.device) for t in (self.test.ids, self.test.lengths,
                                                                               self.test_mask)))
        values = {"test_acc": acc, "test_loss": loss, "train_loss": float(torch.stack(self._losses).mean())}
        epoch = self.current_epoch + 1
        self.curve["epoch"].append(epoch)
        for k, v in values.items():
            self.curve[k].append(v)
        log_epoch(self.metrics_logger, epoch, values)


def text_training_key(cfg, defense: dict | None = None) -> str:
    """Hash of what determines a text training run: corpus, victim, profile, seed, defense
    (None: undefended). Where files live, the profile's name and how privacy is accounted
    change no result."""
    train = OmegaConf.to_container(cfg.train, resolve=True)
    for key in ("name", "cache_dir", "delta", "accountant"):
        train.pop(key, None)
    what = {"version": CACHE_VERSION, "task": "text", "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
            "model": OmegaConf.to_container(cfg.model, resolve=True), "train": train, "seed": cfg.seed}
    if defense is not None and defense.get("name") != "none":
        what["defense"] = defense
    return content_hash(what)


def run_text_training(cfg, parts: tuple[TextSplit, TextSplit], logger=None) -> dict:
    """Train the text victim under cfg.defense on parts[0] (the tokenizer's part of the corpus)
    and score it on parts[1] (the attacked part); the image side's record (run_training):
    test_acc is masked-token accuracy, next to the cached undefended baseline's."""
    train = _subset(parts[0], cfg.train.max_train_sentences, cfg.seed)
    test = _subset(parts[1], cfg.train.max_test_sentences, 0)  # the held-out sentences: the data's draw
    defense = OmegaConf.to_container(cfg.defense, resolve=True)
    undefended = defense["name"] == "none"
    baseline, cached_baseline = cached_json(cfg.train.cache_dir, text_training_key(cfg), lambda: fit_text(
        cfg, train, test, {"name": "none"}, logger if undefended else None))
    if undefended:
        result, cached = baseline, cached_baseline
    else:
        result, cached = cached_json(cfg.train.cache_dir, text_training_key(cfg, defense), lambda: fit_text(
            cfg, train, test, defense, logger))
    if cached:
        replay_curve(logger, result["curve"])
    if DEFENSES[defense["name"]].per_sample:
        rate = cfg.train.batch_size / result["train_sentences"]
        result = {**result, **privacy_spent(defense["noise_multiplier"], rate, result["steps"], cfg.train.delta,
                                            cfg.train.accountant)}
    return {**result, "baseline_test_acc": baseline["test_acc"],
            "utility_drop": baseline["test_acc"] - result["test_acc"], "cached": cached,
            "cached_baseline": cached_baseline}


def _subset(split: TextSplit, limit, seed: int) -> TextSplit:
    if not limit or limit >= len(split):
        return split
    keep = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:limit]
    return TextSplit(split.ids[keep], split.lengths[keep], split.tokenizer)


def fit_text(cfg, train: TextSplit, test: TextSplit, defense: dict, logger=None) -> dict:
    """One seeded training run of the text victim (from the attacked initial weights) under `defense`."""
    t = cfg.train
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    torch.manual_seed(cfg.seed)  # the victim's initial weights, as the text job draws them
    model = build_text_model(cfg.model, train.vocab_size)
    module = DefendedTextTraining(model, defense_from_config(defense), t, cfg.seed, test, logger)
    order = RandomSampler(range(len(train)), generator=torch.Generator().manual_seed(cfg.seed))
    loader = DataLoader(TensorDataset(train.ids, train.lengths), sampler=BatchSampler(order, t.batch_size, True),
                        batch_size=None)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, max_epochs=t.epochs, logger=False,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=True,
                         num_sanity_val_steps=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")  # in-memory tensors
        trainer.fit(module, loader)
    curve = module.curve
    return {"test_acc": curve["test_acc"][-1], "test_loss": curve["test_loss"][-1],
            "train_loss": curve["train_loss"][-1], "wall_s": time.perf_counter() - start, "epochs": t.epochs,
            "train_sentences": len(train), "test_sentences": len(test), "mask_rate": t.mask_rate,
            "steps": t.epochs * (len(train) // t.batch_size), "curve": curve}
