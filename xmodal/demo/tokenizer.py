"""Small byte-level BPE tokenizers trained locally, in the format CLIP checkpoints ship.

Nothing here downloads anything: a byte-level BPE is trained with the ``tokenizers`` library on
the texts handed in, then wrapped in the transformers class a real checkpoint would name, so that
``AutoTokenizer.from_pretrained(dir)`` and ``AutoProcessor.from_pretrained(dir)`` load it back.

Format: CLIP's pre-tokenizer (lower-case, split on letters / digits / punctuation,
byte-level), BPE with the ``</w>`` end-of-word suffix, and a base vocabulary holding all 256 byte
symbols with and without ``</w>``, so no input ever maps to the unknown token.

``<|startoftext|>`` and ``<|endoftext|>`` are the last two ids, as in OpenAI's vocabulary; padding
uses ``<|endoftext|>``. CLIP pools the text tower at the *first* id equal to
``text_config.eos_token_id`` (legacy configs with ``eos_token_id == 2`` pool at the highest id
instead); with the specials last and padding after the real EOS, both rules pick the real EOS.

SigLIP's SentencePiece tokenizer lives in :mod:`xmodal.demo.tokenizers_families`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import CLIPTokenizer

logger = logging.getLogger(__name__)

CLIP_BOS = "<|startoftext|>"
CLIP_EOS = "<|endoftext|>"
END_OF_WORD = "</w>"

# The split pattern of OpenAI's CLIP tokenizer (also used by transformers' CLIPTokenizer).
_CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
    r"""[^\s\p{L}\p{N}]+"""
)

# General words trained in beside the caller's texts, so queries outside the demo world still
# tokenize into sensible pieces rather than single bytes.
BASE_TEXTS: tuple[str, ...] = (
    "a photo of a cat",
    "a photo of a dog",
    "a picture of a person riding a bicycle down the street",
    "a group of people sitting at a table with food",
    "an image of a red car parked next to a house",
    "the quick brown fox jumps over the lazy dog",
    "a small shape on a plain background",
    "two birds flying over the water at sunset",
)


@dataclass(frozen=True)
class BpeModel:
    """A trained byte-level BPE: ``vocab`` (token -> id) and ordered ``merges``."""

    vocab: dict[str, int]
    merges: list[tuple[str, str]]


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    split = pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True)
    return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False)])


def train_bpe(texts: Iterable[str], *, vocab_size: int = 1024) -> BpeModel:
    """Train a lower-casing byte-level BPE on ``texts``; ids follow OpenAI CLIP's layout.

    Ids 0..255 are the byte symbols, 256..511 the same with ``</w>``, then one id per merge in
    merge order (so ``vocab_size`` counts the 512 base symbols). Special tokens are not included;
    the builders below append them.
    """
    corpus = [*BASE_TEXTS, *texts]
    tok = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD))
    tok.normalizer = _normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - 256, 300),  # the trainer's count excludes the </w> variants
        min_frequency=1,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    raw_merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in raw_merges]
    base = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for symbol in [*base, *(s + END_OF_WORD for s in base)]:
        vocab.setdefault(symbol, len(vocab))
    kept: list[tuple[str, str]] = []
    for left, right in merges:
        if len(vocab) >= vocab_size:
            break
        if left in vocab and right in vocab:
            vocab.setdefault(left + right, len(vocab))
            kept.append((left, right))
    logger.debug("trained BPE: %d tokens, %d merges", len(vocab), len(kept))
    return BpeModel(vocab=vocab, merges=kept)


def build_clip_tokenizer(
    texts: Sequence[str], *, vocab_size: int = 1024, model_max_length: int = 32
) -> CLIPTokenizer:
    """A ``CLIPTokenizer`` trained on ``texts``; save it with ``save_pretrained``."""
    bpe = train_bpe(texts, vocab_size=vocab_size)
    vocab = dict(bpe.vocab)
    vocab[CLIP_BOS] = len(vocab)
    vocab[CLIP_EOS] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=bpe.merges, model_max_length=model_max_length)
