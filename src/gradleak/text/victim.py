"""The language victim: a small BERT-like masked language model, and the client's update on it.

Token embeddings plus learned position embeddings, `layers` post-LayerNorm encoder blocks
(self-attention written as softmax(QK^T / sqrt(d)) V with plain ops: torch's fused attention
kernels have no double backward, which DLG's objective needs), and an output head untied
from the input embeddings (`tied: false`, the default) over the vocabulary. Every weight is
drawn as BERT draws its own (normal, std 0.02; biases zero, LayerNorm at one): token and
position embeddings on one scale.

The client's update is the gradient of the masked-LM loss on its sentence with every
position predicted from the unmasked sentence (mask rate 0 at the attacked step, as in
DLG's language experiment, where the labels are the sentence itself): the mean over
positions of the cross-entropy of the token there.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

EMBEDDING = "tokens.weight"  # the input embedding matrix: its gradient's rows name the sentence's words
OUTPUT_BIAS = "head.bias"    # its gradient counts them


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm2 = nn.LayerNorm(dim)

    def attention(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x [L, dim] -> [L, dim]: multi-head self-attention in plain ops (twice differentiable);
        keys past the sentence's end (valid [L] false) get no weight."""
        length, dim = x.shape
        q, k, v = self.qkv(x).view(length, 3, self.heads, dim // self.heads).permute(1, 2, 0, 3)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads)
        weights = torch.softmax(torch.where(valid, scores, -torch.inf), dim=-1)
        return self.out((weights @ v).transpose(0, 1).reshape(length, dim))

    def forward(self, x, valid):
        x = self.norm1(x + self.attention(x, valid))
        return self.norm2(x + self.ff(x))


class MaskedLM(nn.Module):
    def __init__(self, vocab_size: int, max_len: int, dim: int, layers: int, heads: int, hidden: int,
                 tied: bool = False):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(layers)])
        self.head = nn.Linear(dim, vocab_size)
        if tied:
            self.head.weight = self.tokens.weight
        self.apply(_bert_init)

    @property
    def max_len(self) -> int:
        return self.positions.num_embeddings

    def forward_embeddings(self, embedded: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Token embeddings [L, dim] (real or dummy; valid [L]: the sentence's positions, the
        rest padding that nothing attends to) -> logits [L, vocab]."""
        x = self.norm(embedded + self.positions.weight[: len(embedded)])
        for block in self.blocks:
            x = block(x, valid)
        return self.head(x)

    def forward(self, inputs: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """inputs: token ids [L], or (a float tensor) their embeddings [L, dim]."""
        embedded = inputs if inputs.is_floating_point() else self.tokens(inputs)
        return self.forward_embeddings(embedded, valid)


def _bert_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear | nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear) and m.bias is not None:
        nn.init.zeros_(m.bias)


def build_text_model(cfg, vocab_size: int) -> MaskedLM:
    """The model node (name, dim, layers, heads, hidden, max_len, tied) at its seeded init."""
    return MaskedLM(vocab_size, cfg.max_len, cfg.dim, cfg.layers, cfg.heads, cfg.hidden, cfg.tied)


def lm_loss(logits: torch.Tensor, soft_labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the sentence's positions of the cross-entropy with (soft) labels [L, vocab]."""
    per_position = torch.sum(-soft_labels * F.log_softmax(logits, dim=-1), dim=-1)
    return (per_position * valid).sum() / valid.sum()


def valid_positions(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """[T] lengths -> [T, max_len] bool: the sentence's positions."""
    return torch.arange(max_len, device=lengths.device) < lengths[:, None]


def sentence_gradients(model: MaskedLM, ids: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """Each sentence's own update: ids [T, L] padded, lengths [T] -> [T, *param] per
    parameter, in model.named_parameters() order (padding changes nothing: masked out)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    vocab = model.head.out_features

    def one(sentence, labels, valid):
        def loss(p):
            return lm_loss(functional_call(model, p, (sentence, valid)), labels, valid)
        return grad(loss)(params)

    labels = F.one_hot(ids, vocab).to(params[EMBEDDING].dtype)  # one_hot has no vmap rule
    grads = vmap(one)(ids, labels, valid_positions(lengths, ids.shape[1]))
    return [grads[n] for n in params]
