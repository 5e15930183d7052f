"""task=text: the language victim, the text attack, its verdicts and the job."""
import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gradleak.text.attack import TextAttack, assign, bag_of_words
from gradleak.text.corpus import load_text
from gradleak.text.verdicts import reid_ranks, rouge_f, summarize, token_accuracy
from gradleak.text.victim import EMBEDDING, OUTPUT_BIAS, MaskedLM, sentence_gradients
from gradleak.victim.defenses import defense_from_config

VOCAB = 60


def small_model(dtype=torch.float64) -> MaskedLM:
    torch.manual_seed(0)
    return MaskedLM(VOCAB, 12, 16, 2, 2, 32).to(dtype)


def attack_cfg(**over):
    cfg = dict(restarts=1, steps=3, lr=1.0, max_iter=5, history_size=10, line_search="backtracking",
               divergence_factor=1e4, match="l2", tag_l1=0.0, bag_of_words=True, discrete_steps=0,
               adaptive=False, snapshots=2,
               stop=dict(enabled=False, converged_loss=1e-8, stall_steps=20, stall_tolerance=1e-2,
                         restart_warmup=20, restart_factor=10.0, restart_delay=0))
    return OmegaConf.create({**cfg, **over})


def sentences(n=3, length=10):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (n, length), generator=gen)
    ids[0, 2] = ids[0, 5]  # a repeated word
    return ids, torch.tensor([length, length - 3, length - 1][:n])


@pytest.mark.fast
def test_attention_equals_torch_sdpa_in_float64():
    model = small_model()
    block = model.blocks[0]
    x = torch.randn(7, 16, dtype=torch.float64)
    valid = torch.tensor([True] * 5 + [False] * 2)
    q, k, v = block.qkv(x).view(7, 3, 2, 8).permute(1, 2, 0, 3)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[None, None, :].expand(2, 7, 7))
    expected = block.out(expected.transpose(0, 1).reshape(7, 16))
    assert torch.allclose(block.attention(x, valid), expected, atol=1e-12)


@pytest.mark.fast
def test_padding_changes_no_gradient_and_the_double_backward_runs():
    model = small_model()
    ids, lengths = sentences()
    padded = sentence_gradients(model, ids, lengths)
    alone = sentence_gradients(model, ids[1:2, : lengths[1]], lengths[1:2])
    assert max(float((p[1] - a[0]).abs().max()) for p, a in zip(padded, alone)) < 1e-15
    embedded = model.tokens.weight[ids[0]].detach().clone().requires_grad_(True)
    loss = F.cross_entropy(model(embedded, torch.ones(10, dtype=torch.bool)), ids[0])
    g = torch.autograd.grad(loss, list(model.parameters())[1:], create_graph=True)
    (second,) = torch.autograd.grad(sum((x ** 2).sum() for x in g), embedded)
    assert second.abs().sum() > 0


@pytest.mark.fast
def test_the_bag_of_words_is_the_sentence_with_its_counts():
    model = small_model()
    ids, lengths = sentences()
    grads = dict(zip([n for n, _ in model.named_parameters()], sentence_gradients(model, ids, lengths)))
    cand, mask, counts = bag_of_words({n: grads[n] for n in (EMBEDDING, OUTPUT_BIAS)}, lengths, VOCAB)
    for s in range(3):
        words = ids[s, : lengths[s]].tolist()
        found = dict(zip(cand[s][mask[s]].tolist(), counts[s][mask[s]].tolist()))
        assert found == {w: words.count(w) for w in set(words)}


@pytest.mark.fast
def test_the_match_is_zero_at_the_truth_and_the_assignment_finds_it():
    model = small_model()
    ids, lengths = sentences()
    attack = TextAttack(attack_cfg(), model, ids, lengths, defense_from_config({"name": "none"}), 0,
                        torch.device("cpu"))
    assert attack.discrete_distance(ids, torch.arange(3)).abs().max() < 1e-20
    wrong = ids.clone()
    wrong[:, [0, 1]] = wrong[:, [1, 0]]
    assert (attack.discrete_distance(wrong, torch.arange(3)) > 1e-10).all()
    # the continuous match at the true embeddings and one-hot labels over the candidates
    t = 0
    cand = attack.cand[t]
    labels = (cand[None, :] == ids[t, :, None]).double() * 1e3  # logits: one-hot after softmax
    x = torch.cat([model.tokens.weight[ids[t]].flatten(), labels.flatten()])[None]
    value, _ = attack.optimizer.f(x, torch.tensor([t]))
    assert float(value) < 1e-20
    score = (cand[None, :] == ids[t, :, None]).double()
    assert assign(score, cand, attack.counts[t], 10).tolist() == ids[t].tolist()


@pytest.mark.fast
def test_each_problem_of_a_batch_equals_its_run_alone():
    model = small_model()
    ids, lengths = sentences()
    cfg = attack_cfg()
    together = TextAttack(cfg, model, ids, lengths, defense_from_config({"name": "none"}), 0, torch.device("cpu"))
    x = together.optimizer.state.x
    value, grad = together.optimizer.f(x, torch.arange(3))
    alone = TextAttack(cfg, model, ids[1:2], lengths[1:2], defense_from_config({"name": "none"}), 0,
                       torch.device("cpu"))
    c = alone.cand.shape[1]
    e, labels = together._split(x[1:2])
    x1 = torch.cat([e[:, : ids.shape[1]].flatten(1), labels[:, :, :c].flatten(1)], dim=1)
    v1, _ = alone.optimizer.f(x1, torch.tensor([0]))
    assert float(v1) == pytest.approx(float(value[1]), rel=1e-10)


def test_undefended_attack_recovers_sentences_exactly_and_noise_stops_it():
    model = small_model(torch.float32)
    ids, lengths = sentences()
    from gradleak.text.attack import run_text_attack
    out = run_text_attack(attack_cfg(steps=5, discrete_steps=60), model, ids, lengths,
                          defense_from_config({"name": "none"}), 0, "cpu", progress_bar=False)
    assert token_accuracy(out.recovered, out.truth, out.lengths).tolist() == [1.0, 1.0, 1.0]
    noisy = run_text_attack(attack_cfg(steps=5, discrete_steps=60), model, ids, lengths,
                            defense_from_config({"name": "noise", "noise": "gaussian", "scale": 1.0}), 0, "cpu",
                            progress_bar=False)
    assert token_accuracy(noisy.recovered, noisy.truth, noisy.lengths).mean() < 0.5


@pytest.mark.fast
def test_rouge_and_reidentification_on_fixed_pairs():
    r = rouge_f("the cat sat", "the cat sat down")
    assert r["rouge1"] == pytest.approx(6 / 7) and r["rouge2"] == pytest.approx(2 * (2 / 2) * (2 / 3) / (1 + 2 / 3))
    assert r["rougeL"] == pytest.approx(6 / 7)
    assert rouge_f("down sat cat the", "the cat sat down")["rougeL"] == pytest.approx(0.25)
    texts = ["the cat sat down", "a dog ran off", "the cat ran off", "birds sing"]
    pool = torch.tensor([1, 2, 3, 0])
    assert reid_ranks(["the cat sat", "dog ran"], [0, 1], texts, pool, 3) == [1, 1]
    # "the cat ran off" itself is closer; "a dog ran off" ties with the truth (ties go to the truth)
    assert reid_ranks(["the cat ran off"], [0], texts, pool, 3) == [2]
    summary = summarize([{"success": True, "reidentified": 1.0, "token_acc": 1.0, "rouge1_f": 1, "rouge2_f": 1,
                          "rougeL_f": 1}, {"success": False, "reidentified": 0.0, "token_acc": 0.5, "rouge1_f": 0.5,
                                           "rouge2_f": 0, "rougeL_f": 0.5}], 1e-3)
    assert summary["success_rate"] == 0.5 and summary["token_acc"] == 0.75 and summary["reid_rate_lo"] < 0.5


@pytest.mark.fast
def test_the_bundled_corpus_splits_away_from_the_tokenizer():
    cfg = OmegaConf.create(dict(name="bible", vocab_size=4003, min_tokens=8, max_tokens=16))
    split = load_text(cfg)
    assert len(split) > 1000 and split.vocab_size == 4003
    assert split.lengths.min() >= 8 and split.lengths.max() <= 16
    assert (split.ids[:, 0] > 2).float().mean() > 0.95  # real words, not [PAD]/[UNK]/[MASK]
    assert split.text(0).count(" ") + 1 == int(split.lengths[0])


def test_task_text_runs_offline_and_prints_the_recovered_sentences(run_py):
    res = run_py("task=text", "attack.num_targets=3", "attack.distractors=50")
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((run_py.dir / "run" / "metrics.json").read_text())
    assert m["config"]["task"] == "text" and m["config"]["model.name"] == "textlm"
    assert len(m["targets"]) == 3
    for t in m["targets"]:
        assert f"true:      {t['truth']}" in res.stdout
    assert "token accuracy:" in res.stdout and "exact sentence (every token right)" in res.stdout
    assert m["attack"]["token_acc"] == 1.0 and m["attack"]["reid_rate"] == 1.0
    assert "~~" not in (run_py.dir / "run" / "recovered.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["dataset=textfile", "path=EMPTY"], "the file has no sentences"),
    (["dataset=textfile", "path=missing.txt"], "no such file"),
    (["dataset.max_tokens=20"], "longer than the model's positions"),
    (["attack.steps=0", "attack.discrete_steps=0"], "the attack needs a budget"),
    (["dataset=mnist"], "dataset=mnist: allowed with task=text"),
])
def test_bad_text_input_is_one_line_and_exit_2(run_py, args, message):
    (run_py.dir / "EMPTY").write_text("\n\n")
    args = [a.replace("EMPTY", str(run_py.dir / "EMPTY")) for a in args]
    res = run_py("task=text", *args)
    assert res.returncode == 2, res.stderr[-1000:]
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.fast
def test_the_bench_reference_loop_matches_our_objective():
    """scripts/bench.py --attack text: its one-sentence loop evaluates the objective ours does."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1] / "scripts"))
    from bench import _TextReference

    model = small_model()
    ids, lengths = sentences()
    attack = TextAttack(attack_cfg(), model, ids, lengths, defense_from_config({"name": "none"}), 0,
                        torch.device("cpu"))
    ours, _ = attack.optimizer.f(attack.optimizer.state.x, torch.arange(3))
    for s in range(3):
        assert float(_TextReference(attack, s).closure()) == pytest.approx(float(ours[s]), rel=1e-9)
