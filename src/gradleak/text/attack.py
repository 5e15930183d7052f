"""DLG on text: K = sentences x restarts problems in one batched engine, then a discrete phase.

Continuous phase (DLG's language attack): problem k owns dummy token embeddings [L, dim] and
dummy soft labels [L, C] over its candidate tokens, and minimizes the match between the
gradient they induce and its target's defended gradient over every parameter but the input
embedding matrix (a dummy embedding bypasses it). The attacker knows the sentence's length
L (the position embeddings' gradient is non-zero on its first L rows). The candidates are
the whole vocabulary, or with the bag-of-words prior (`bag_of_words`) the rows of the
embedding matrix whose gradient is largest: exactly the sentence's tokens without a defense
(the other rows' gradient is zero), the L largest norms under noise. Each position then
maps to the candidate token whose embedding is nearest by cosine similarity, or to its soft
label's argmax (the labels are the sentence itself), whichever the gradient match prefers.

Discrete phase (`discrete_steps` > 0): greedy moves over the recovered tokens, scored by the
gradient match of the discrete sentence (every parameter, the embedding matrix included):
each step evaluates every swap of two positions and every replacement of a position by a
candidate, batched over moves and sentences, and takes each sentence's best move while it
lowers its match (LAMP's discrete search without its pretrained language model).
Matches: l2 (DLG), cosine (Inverting Gradients), tag (TAG: l2 + tag_l1 x l1). An adaptive
attack (`adaptive`) applies the defense's AdaptiveForm to the dummy gradient in both phases;
in the continuous one it sees every parameter but the embedding matrix, so a form that
couples the parameters (DP-SGD's clipping by the whole gradient's norm) is exact only in
the discrete phase.
"""
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch.func import functional_call, grad, grad_and_value, vmap

from gradleak.engine.attack import Attack, adaptive_form, drive, pick_device
from gradleak.engine.objective import gradient_distance
from gradleak.engine.optimizers import BatchedLBFGS
from gradleak.engine.stopping import count_reasons
from gradleak.text.victim import EMBEDDING, OUTPUT_BIAS, MaskedLM, lm_loss, sentence_gradients, valid_positions


def text_distance(dummy, targets, match: str, tag_l1: float) -> torch.Tensor:
    if match == "tag":
        return gradient_distance(dummy, targets, "l2") + tag_l1 * gradient_distance(dummy, targets, "l1")
    return gradient_distance(dummy, targets, match)


def bag_of_words(targets: dict, lengths: torch.Tensor, vocab: int) -> tuple[torch.Tensor, ...]:
    """What the gradient says about each sentence's words: ([T, C] candidate ids, [T, C] mask,
    [T, C] counts). The candidates are the L rows of the input embedding matrix with the
    largest gradient norm (L the sentence's length; rows of zero gradient are never one):
    without a defense, exactly the sentence's distinct tokens. Their counts come from the
    output bias's gradient, the mean over positions of softmax - one_hot: at the victim's
    initial weights every softmax is close to 1 / vocab, so token c occurs about
    L (1 / vocab - grad_c) times. Counts are at least 1 and add up to L."""
    norms = targets[EMBEDDING].flatten(2).norm(dim=2)                   # [T, vocab]
    c = int(lengths.max())
    top = norms.topk(c, dim=1)
    mask = (torch.arange(c)[None] < lengths[:, None]) & (top.values > 0)
    estimate = lengths[:, None] * (1 / vocab - targets[OUTPUT_BIAS].gather(1, top.indices))
    counts = torch.stack([_counts(e[m], int(n), c) for e, m, n in zip(estimate, mask, lengths)])
    return top.indices, mask, counts


def _counts(estimate: torch.Tensor, length: int, width: int) -> torch.Tensor:
    """Integer counts >= 1 near `estimate` that add up to `length`, padded to `width`."""
    counts = estimate.round().clamp(min=1).long()
    while counts.sum() != length:
        residual = estimate - counts
        if counts.sum() < length:
            counts[residual.argmax()] += 1
        else:
            residual[counts <= 1] = torch.inf
            counts[residual.argmin()] -= 1
    return torch.cat([counts, counts.new_zeros(width - len(counts))])


def assign(scores: torch.Tensor, cand: torch.Tensor, counts: torch.Tensor, length: int) -> torch.Tensor:
    """The bag's tokens (each candidate `counts` times) placed at the sentence's positions
    to maximize the summed score [L, C] of (position, candidate): an optimal assignment."""
    slots = torch.repeat_interleave(torch.arange(len(cand)), counts)          # [length] candidate per slot
    rows, cols = linear_sum_assignment(scores[:length, slots].double().numpy(), maximize=True)
    tokens = torch.empty(length, dtype=torch.long)
    tokens[rows] = cand[slots[cols]]
    return tokens


class TextAttack(Attack):
    """Attack.advance / stop_ended / best_problems / stop_reasons on text problems."""

    def __init__(self, cfg, model: MaskedLM, ids: torch.Tensor, lengths: torch.Tensor, defense, seed: int,
                 device: torch.device):
        self.cfg, self.device, self.restarts = cfg, device, cfg.restarts
        self.success_mse = 0.5 / ids.shape[1]  # token error below one position: every token right
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.names = [n for n, _ in self.model.named_parameters()]
        self.params = {n: p.detach() for n, p in self.model.named_parameters()}
        self.truth, self.lengths = ids.to(device), lengths.to(device)
        self.valid = valid_positions(self.lengths, ids.shape[1])
        self.targets = self._defended_targets(defense, seed)
        self.adaptive = adaptive_form(cfg, defense)
        self.match = self.adaptive.match or cfg.match
        vocab = self.model.head.out_features
        if cfg.bag_of_words:
            named = {n: self.targets[self.names.index(n)].cpu() for n in (EMBEDDING, OUTPUT_BIAS)}
            self.cand, self.cand_mask, self.counts = (x.to(device) for x in bag_of_words(named, lengths, vocab))
        else:  # DLG: any token of the vocabulary, at each position its nearest
            self.cand = torch.arange(vocab, device=device).expand(len(ids), vocab)
            self.cand_mask, self.counts = torch.ones_like(self.cand, dtype=torch.bool), None
        self.target_of = torch.arange(len(ids), device=device).repeat_interleave(self.restarts)
        self.dim = self.model.tokens.embedding_dim
        self.optimizer = self._optimizer(seed)
        self.stop_rules = self._stop_rules()

    def _defended_targets(self, defense, seed: int) -> list[torch.Tensor]:
        clean = sentence_gradients(self.model, self.truth, self.lengths)
        if getattr(defense, "per_sample", False):  # DP-SGD: one sentence is the client's one sample
            clean = [g[:, None] for g in clean]
        noise_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        return defense(clean, generator=noise_gen, batch_dims=1)

    # --- the continuous phase: dummy embeddings and soft labels ---------------------------------

    def _split(self, x: torch.Tensor):
        length, c = self.truth.shape[1], self.cand.shape[1]
        return x[:, : length * self.dim].view(-1, length, self.dim), x[:, length * self.dim:].view(-1, length, c)

    def _objective(self):
        kept = [n for n in self.names if n != EMBEDDING]

        def value(embedded, label_logits, cand, cand_mask, valid, targets):
            def loss(p):
                logp = F.log_softmax(_embedded_forward(self.model, {**self.params, **p}, embedded, valid), dim=-1)
                soft = torch.softmax(torch.where(cand_mask, label_logits, -torch.inf), dim=-1)
                per_position = -(soft * logp.gather(-1, cand.expand(len(logp), -1))).sum(-1)
                return (per_position * valid).sum() / valid.sum()
            g = grad(loss)({n: self.params[n] for n in kept})
            dummy = [g[n] for n in kept]
            if self.adaptive.transform is not None:
                dummy = self.adaptive.transform(dummy, targets)
            return text_distance(dummy, targets, self.match, self.cfg.tag_l1)

        batched = vmap(grad_and_value(value, argnums=(0, 1)))
        kept_targets = [self.targets[self.names.index(n)] for n in kept]

        @torch.no_grad()
        def f(x, rows):
            t = self.target_of[rows]
            embedded, logits = self._split(x)
            (d_emb, d_logits), v = batched(embedded, logits, self.cand[t], self.cand_mask[t], self.valid[t],
                                           [g[t] for g in kept_targets])
            return v.detach(), torch.cat([d_emb.flatten(1), d_logits.flatten(1)], dim=1).detach()
        return f

    def _optimizer(self, seed: int):
        k, length, c = len(self.target_of), self.truth.shape[1], self.cand.shape[1]
        gen = torch.Generator().manual_seed(seed)
        dtype = self.params[EMBEDDING].dtype
        scale = float(self.params[EMBEDDING].std())  # dummies drawn on the embeddings' scale
        embedded = torch.randn((k, length * self.dim), generator=gen, dtype=dtype) * scale
        logits = torch.randn((k, length * c), generator=gen, dtype=dtype)
        x0 = torch.cat([embedded, logits], dim=1).to(self.device)
        cfg = self.cfg
        return BatchedLBFGS(self._objective(), x0, lr=cfg.lr, max_iter=cfg.max_iter, history_size=cfg.history_size,
                            line_search=None if cfg.line_search == "none" else cfg.line_search,
                            divergence_factor=cfg.divergence_factor)

    def continuous_tokens(self, best: torch.Tensor) -> list[torch.Tensor]:
        """Two readings of each kept problem, [T, L] token ids each (PAD past the sentence):
        by the dummy embeddings' cosine similarity to the candidates' embeddings, and by the
        soft labels. With the bag's counts, the bag is placed by an optimal assignment;
        without, each position takes its best candidate."""
        embedded, logits = self._split(self.optimizer.state.x[best])
        cand_emb = self.params[EMBEDDING][self.cand]                                      # [T, C, dim]
        sim = F.cosine_similarity(embedded[:, :, None], cand_emb[:, None], dim=-1)         # [T, L, C]
        readings = []
        for score in (sim, logits):
            score = torch.where(self.cand_mask[:, None], score, -torch.inf).detach().cpu()
            if self.counts is None:
                tokens = self.cand.gather(1, score.argmax(-1).to(self.device))
            else:
                tokens = torch.zeros_like(self.truth)
                for t, n in enumerate(self.lengths.tolist()):
                    tokens[t, :n] = assign(score[t], self.cand[t].cpu(), self.counts[t].cpu(), n).to(self.device)
            readings.append(self._pad(tokens))
        return readings

    def _pad(self, ids):
        return torch.where(self.valid, ids, 0)

    def reconstructions(self, best: torch.Tensor) -> torch.Tensor:
        return self.continuous_tokens(best)[0]

    def matched_mse(self, recon: torch.Tensor) -> torch.Tensor:
        """The progress bar's error: each sentence's token error rate."""
        return 1 - ((recon == self.truth) & self.valid).sum(1) / self.lengths

    # --- the discrete phase -------------------------------------------------------------------

    def discrete_distance(self, sentences: torch.Tensor, target_rows: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """The gradient match of discrete sentences [M, L] against targets `target_rows` [M]."""
        vocab = self.model.head.out_features

        def one(ids, labels, valid, targets):
            def loss(p):
                return lm_loss(_embedded_forward(self.model, p, p[EMBEDDING][ids], valid), labels, valid)
            g = grad(loss)(self.params)
            dummy = [g[n] for n in self.names]
            if self.adaptive.transform is not None:
                dummy = self.adaptive.transform(dummy, targets)
            return text_distance(dummy, targets, self.match, self.cfg.tag_l1)

        batched = vmap(one)
        out = []
        for i in range(0, len(sentences), chunk):
            ids, rows = sentences[i:i + chunk], target_rows[i:i + chunk]
            labels = F.one_hot(ids, vocab).to(self.params[EMBEDDING].dtype)
            out.append(batched(ids, labels, self.valid[rows], [g[rows] for g in self.targets]))
        return torch.cat(out)

    def discrete_search(self, start: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Greedy moves from the best of `start` ([T, L] each): swaps while one lowers a
        sentence's match, then (with the bag of words) replacements by a candidate, then
        swaps again, for at most `discrete_steps` rounds of moves; a sentence stops once its
        match is below `stop.converged_loss` x its starting match. Returns (tokens [T, L],
        their match [T], moves evaluated)."""
        t = len(self.truth)
        rows = torch.arange(t, device=self.device)
        scores = torch.stack([self.discrete_distance(s, rows) for s in start])
        current = torch.stack(start)[scores.argmin(0), rows].clone()
        best = scores.min(0).values
        evaluated = len(start) * t
        # a sentence whose match fell as far as the converged stop rule asks is settled
        settled = self.cfg.stop.converged_loss * best
        active = best > settled
        replace = False
        for _ in range(self.cfg.discrete_steps):
            moves, owner = self._moves(current, active, replace)
            improved = torch.zeros(t, dtype=torch.bool, device=self.device)
            if len(moves):
                score = self.discrete_distance(moves, owner)
                evaluated += len(moves)
                top = torch.full((t,), torch.inf, dtype=score.dtype, device=self.device).scatter_reduce(
                    0, owner, score, "amin")
                improved = top < best * (1 - 1e-6)
                for s in torch.nonzero(improved).flatten().tolist():
                    current[s] = moves[torch.nonzero((owner == s) & (score == top[s]))[0, 0]]
                best = torch.where(improved, top, best)
            if improved.any():
                active, replace = improved & (best > settled), False
            elif replace or self.counts is None:
                break  # neither a swap nor a replacement helps any sentence
            else:
                active, replace = best > settled, True
            if not active.any():
                break
        return current, best, evaluated

    def _moves(self, current: torch.Tensor, active: torch.Tensor, replace: bool):
        """Every swap (or replacement by a candidate) of each active sentence:
        (sentences [M, L], owner [M])."""
        sentences, owner = [], []
        for s in torch.nonzero(active).flatten().tolist():
            n, row = int(self.lengths[s]), current[s]
            if replace:
                cands = self.cand[s][self.cand_mask[s]]
                pos = torch.arange(n, device=self.device).repeat_interleave(len(cands))
                moved = row.repeat(len(pos), 1)
                moved[torch.arange(len(pos)), pos] = cands.repeat(n)
                moved = moved[moved[torch.arange(len(pos)), pos] != row[pos]]
            else:
                i, j = torch.triu_indices(n, n, offset=1, device=self.device)
                keep = row[i] != row[j]
                i, j = i[keep], j[keep]
                moved = row.repeat(len(i), 1)
                moved[torch.arange(len(i)), i], moved[torch.arange(len(i)), j] = row[j], row[i]
            sentences.append(moved)
            owner.append(torch.full((len(moved),), s, device=self.device))
        if not sentences:
            return current[:0], torch.zeros(0, dtype=torch.long, device=self.device)
        return torch.cat(sentences), torch.cat(owner)


def _embedded_forward(model: MaskedLM, params: dict, embedded, valid):
    """The model's logits from embeddings [L, dim], with `params` swapped in (torch.func)."""
    return functional_call(model, params, (embedded, valid))


@dataclass
class TextOutcome:
    recovered: torch.Tensor      # [T, L] token ids (PAD past each sentence)
    truth: torch.Tensor          # [T, L]
    lengths: torch.Tensor        # [T]
    continuous: torch.Tensor     # [T, L] the continuous phase's reading, before the discrete one
    loss: list[float]            # the kept problem's continuous match
    discrete_match: list[float]  # the final sentence's match
    candidates: list[int]        # candidate tokens per sentence
    progress: object
    wall_s: float
    device: str
    stopped: dict
    evals: list[int]
    moves: int


def run_text_attack(cfg, model: MaskedLM, ids, lengths, defense, seed: int, accelerator: str = "auto",
                    progress_bar: bool = True) -> TextOutcome:
    """Attack the defended updates of sentences ids [T, L] (lengths [T]): the continuous
    phase in the engine's loop, then the discrete search."""
    device = pick_device(accelerator)
    start = time.perf_counter()
    attack = TextAttack(cfg, model, ids, lengths, defense, seed, device)
    module = drive(attack, cfg, device, progress_bar)
    best = attack.best_problems()
    readings = attack.continuous_tokens(best)
    recovered, match, moves = attack.discrete_search(readings)
    st = attack.optimizer.state
    return TextOutcome(recovered.cpu(), attack.truth.cpu(), attack.lengths.cpu(), readings[0].cpu(),
                       st.loss[best].tolist(), match.tolist(), attack.cand_mask.sum(1).tolist(), module.progress,
                       time.perf_counter() - start, device.type, count_reasons(attack.stop_reasons()),
                       st.evals[best].tolist(), moves)
