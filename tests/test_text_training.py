"""task=text with train=: the text victim's defended training (text/training.py)."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gradleak import project_root
from gradleak.text.corpus import MASK, load_text_parts
from gradleak.text.training import mask_positions, masked_accuracy, run_text_training, sentence_loss, worker_gradients
from gradleak.text.victim import MaskedLM, valid_positions
from gradleak.victim.privacy import privacy_spent

VOCAB = 50
TINY = ["train.max_train_sentences=512", "train.max_test_sentences=100", "train.epochs=2", "train.lr=1e-2"]
STEPS = 2 * (512 // 64)


def text_cfg(*overrides, cache):
    with initialize_config_dir(config_dir=str(project_root() / "conf"), version_base="1.3"):
        return compose("config", overrides=["task=text", "train=text_smoke", f"train.cache_dir={cache}", *overrides])


def batch(n=8, width=8):
    gen = torch.Generator().manual_seed(3)
    lengths = torch.tensor([3, 5, 8, 2, 6, 4, 7, 5])[:n]
    ids = torch.randint(3, VOCAB, (n, width), generator=gen)
    return ids, lengths, mask_positions(lengths, width, 0.3, gen), valid_positions(lengths, width)


@pytest.mark.fast
def test_masking_draws_the_rate_inside_each_sentence_and_at_least_one_position():
    lengths = torch.randint(2, 17, (4000,), generator=torch.Generator().manual_seed(0))
    mask = mask_positions(lengths, 16, 0.15, torch.Generator().manual_seed(1))
    assert not (mask & ~valid_positions(lengths, 16)).any()
    assert mask.any(1).all()
    rate = float(mask.sum() / lengths.sum())
    assert 0.15 < rate < 0.19  # 15%, plus the forced position of sentences that drew none


@pytest.mark.fast
def test_worker_gradient_is_the_mean_of_its_sentences_and_matches_autograd():
    torch.manual_seed(0)
    model = MaskedLM(VOCAB, 8, 16, 2, 2, 32).double()
    ids, lengths, mask, valid = batch()
    shards = [t.reshape(2, 4, 8) for t in (ids, mask, valid)]
    per_worker, losses = worker_gradients(model, *shards, per_sample=False)
    per_sentence, losses_ps = worker_gradients(model, *shards, per_sample=True)
    params = dict(model.named_parameters())
    loss = sum(sentence_loss(model, params, ids[i], mask[i], valid[i]) for i in range(4, 8)) / 4
    reference = torch.autograd.grad(loss, list(params.values()))
    for w, s, r in zip(per_worker, per_sentence, reference):
        assert s.shape[:2] == (2, 4)
        torch.testing.assert_close(w, s.mean(1), rtol=0, atol=1e-13)
        torch.testing.assert_close(w[1], r, rtol=0, atol=1e-13)
    torch.testing.assert_close(losses, losses_ps)
    assert float(losses[1]) == pytest.approx(float(loss), rel=1e-12)


@pytest.mark.fast
def test_masked_accuracy_counts_only_masked_positions_read_through_mask_tokens():
    torch.manual_seed(0)
    model = MaskedLM(VOCAB, 8, 16, 1, 2, 32).double()
    ids, lengths, mask, valid = batch()
    acc, loss = masked_accuracy(model, ids, lengths, mask)
    right, ces = [], []
    for i in range(len(ids)):
        logits = model(torch.where(mask[i], MASK, ids[i]), valid[i])
        for j in mask[i].nonzero().flatten().tolist():
            right.append(int(logits[j].argmax() == ids[i, j]))
            ces.append(float(F.cross_entropy(logits[j:j + 1], ids[i, j:j + 1])))
    assert acc == pytest.approx(sum(right) / len(right)) and loss == pytest.approx(sum(ces) / len(ces), rel=1e-12)


def test_training_learns_a_defense_costs_and_dpsgd_reports_its_epsilon(tmp_path):
    torch.set_num_threads(2)
    undefended = text_cfg(*TINY, cache=tmp_path)
    parts = load_text_parts(undefended.dataset)
    base = run_text_training(undefended, parts)
    assert (base["train_sentences"], base["test_sentences"], base["steps"]) == (512, 100, STEPS)
    assert base["test_loss"] < math.log(parts[0].vocab_size) - 1  # below uniform guessing over the vocabulary
    assert base["curve"]["test_loss"][1] < base["curve"]["test_loss"][0]
    noisy = run_text_training(text_cfg(*TINY, "defense=noise", "scale=1.0", cache=tmp_path), parts)
    assert noisy["cached_baseline"] and not noisy["cached"]
    assert noisy["test_loss"] > base["test_loss"] + 0.5  # noise of std 1 on every gradient entry
    assert noisy["utility_drop"] == pytest.approx(base["test_acc"] - noisy["test_acc"])
    dp = run_text_training(text_cfg(*TINY, "defense=dpsgd", "noise_multiplier=1.0", cache=tmp_path), parts)
    assert dp["epsilon"] == pytest.approx(privacy_spent(1.0, 64 / 512, STEPS, 1e-5)["epsilon"])
    again = run_text_training(text_cfg(*TINY, "defense=dpsgd", "noise_multiplier=1.0", cache=tmp_path), parts)
    assert again["cached"] and again["test_loss"] == dp["test_loss"]


def test_a_text_job_with_training_records_what_the_defense_costs(run_py):
    res = run_py("task=text", "train=text_smoke", *TINY, "defense=dpsgd", "attack.num_targets=1", "attack.steps=2",
                 "attack.discrete_steps=2", "attack.distractors=20")
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((run_py.dir / "run" / "metrics.json").read_text())
    t = m["train"]
    assert t["steps"] == STEPS and t["epsilon"] > 0 and 0 <= t["test_acc"] <= 1
    assert "training (text_smoke): held-out masked-token accuracy" in res.stdout
    assert f"epsilon {t['epsilon']:.3g}" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["task=text", "train=smoke"], "train=smoke: an image training profile; with task=text allowed"),
    (["train=text_smoke"], "train=text_smoke: a text training profile; add task=text"),
    (["task=text", "train=text_smoke", "train.mask_rate=0"], "train.mask_rate=0"),
    (["task=text", "train=text_smoke", "train.batch_size=30"], "train.batch_size=30: allowed a multiple of"),
])
@pytest.mark.fast
def test_a_training_profile_of_the_other_task_is_one_line(args, message):
    from gradleak.checks import ConfigError
    from gradleak.jobs.preflight import preflight

    with pytest.raises(ConfigError) as err:
        preflight(args, project_root() / "conf")
    assert message in str(err.value) and "\n" not in str(err.value)
