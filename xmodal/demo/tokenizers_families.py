"""Small tokenizers trained locally in the formats SigLIP 2, BERT-based and XLM-R checkpoints ship.

Each builder trains a model with the ``tokenizers`` library on a small corpus (nothing is
downloaded) and wraps it in the transformers class the real checkpoints load as, so that
tokenisation follows the real code path:

- :func:`build_gemma_tokenizer`: SigLIP 2's Gemma BPE (``▁`` for spaces, byte fallback, ``<pad>``
  0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3; EOS appended, no BOS), as ``GemmaTokenizer``.
  transformers loads it as ``GemmaTokenizer`` for ``model_type == "siglip"`` (the fixed-resolution
  SigLIP 2 checkpoints) and as ``Siglip2Tokenizer`` (which adds lower-casing) for ``"siglip2"``
  (NaFlex).
- :func:`build_wordpiece_tokenizer`: BERT WordPiece (Chinese-CLIP, ALIGN), as ``BertTokenizer``:
  every CJK character is its own word, accents are stripped when lower-casing, as in
  ``bert-base-uncased``.
- :func:`build_xlmr_tokenizer`: XLM-R's SentencePiece Unigram (AltCLIP), as
  ``XLMRobertaTokenizer``: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` last.
- :func:`build_siglip_tokenizer`: SigLIP's ``spiece.model``, trained with the ``sentencepiece``
  library itself, as ``SiglipTokenizer``.

The corpus always includes :data:`MULTILINGUAL_TEXTS`, so Chinese, Arabic, accented Latin and
emoji queries tokenise into known pieces rather than the unknown token.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm
from tokenizers import Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE, Unigram, WordPiece
from transformers import BertTokenizer, GemmaTokenizer, SiglipTokenizer, XLMRobertaTokenizer

from xmodal.demo.tokenizer import BASE_TEXTS

logger = logging.getLogger(__name__)

# Queries in several scripts; tests search with them, so every family's vocabulary covers them.
MULTILINGUAL_TEXTS: tuple[str, ...] = (
    "一只猫坐在窗台上",
    "海边的日落和两只飞鸟",
    "قطة تجلس على النافذة",
    "غروب الشمس على البحر",
    "un café crème près de la fenêtre, très élégant",
    "Straße mit Bäumen und Fußgängern",
    "a dog 🐶 playing with a ball ⚽ on the beach 🏖️",
    "ПРИВЕТ мир, a mixed-script caption",
)

GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def family_corpus(texts: Sequence[str]) -> list[str]:
    """The training corpus: general words, the multilingual queries and the caller's texts."""
    return [*BASE_TEXTS, *MULTILINGUAL_TEXTS, *texts]


def build_gemma_tokenizer(
    texts: Sequence[str], *, vocab_size: int = 1024, model_max_length: int = 64
) -> GemmaTokenizer:
    """A ``GemmaTokenizer`` (SigLIP 2's): BPE over ``▁``-joined text with byte fallback."""
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[*GEMMA_SPECIALS, *byte_tokens],
        show_progress=False,
    )
    tok = Tokenizer(BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    # Training splits before each "▁" (SentencePiece never merges across words); the saved
    # tokenizer runs BPE on the whole text, as Gemma's does, and no learned merge spans a word.
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.train_from_iterator(family_corpus(texts), trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    merges = [tuple(m.split(" ")) for m in merges]
    return GemmaTokenizer(
        vocab=model["vocab"],
        merges=merges,
        add_bos_token=False,
        add_eos_token=True,
        model_max_length=model_max_length,
    )


def build_wordpiece_tokenizer(
    texts: Sequence[str], *, vocab_size: int = 1024, model_max_length: int = 64
) -> BertTokenizer:
    """An uncased ``BertTokenizer`` (Chinese-CLIP, ALIGN) trained on the family corpus."""
    tok = Tokenizer(WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=list(BERT_SPECIALS)
    )
    tok.train_from_iterator(family_corpus(texts), trainer)
    vocab = json.loads(tok.to_str())["model"]["vocab"]
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=model_max_length)


def build_xlmr_tokenizer(
    texts: Sequence[str], *, vocab_size: int = 1024, model_max_length: int = 64
) -> XLMRobertaTokenizer:
    """An ``XLMRobertaTokenizer`` (AltCLIP): a Unigram model over ``▁``-prefixed words."""
    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(family_corpus(texts), trainer)
    pieces = [(p, float(s)) for p, s in json.loads(tok.to_str())["model"]["vocab"]]
    pieces.append(("<mask>", 0.0))
    tokenizer = XLMRobertaTokenizer(vocab=pieces, model_max_length=model_max_length)
    logger.debug("trained XLM-R unigram: %d pieces", len(pieces))
    return tokenizer


def build_siglip_tokenizer(
    texts: Sequence[str],
    directory: str | Path,
    *,
    vocab_size: int = 1024,
    model_max_length: int = 64,
) -> SiglipTokenizer:
    """SigLIP's tokenizer as ``google/siglip-*`` ship it: ``spiece.model`` + ``SiglipTokenizer``.

    A SentencePiece model (written to ``directory/spiece.model``) with T5's special ids:
    ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, no BOS; ``</s>`` is appended and also pads. It is
    trained on the lower-cased corpus because ``SiglipTokenizer`` lower-cases (and drops ASCII
    punctuation) before encoding; every character of the corpus is a piece and byte fallback
    covers the rest. Google's model is a Unigram; on a corpus this small a Unigram keeps few
    whole words, so this one is BPE (demo words stay one piece each). ``SiglipTokenizer`` runs
    the same code either way. ``model_input_names`` is ``["input_ids"]`` as in the real checkpoints:
    SigLIP was trained without an attention mask.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([text.lower() for text in family_corpus(texts)]),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a small corpus has fewer pieces than vocab_size
        character_coverage=1.0,
        byte_fallback=True,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,  # one thread: the same corpus gives the same model
        minloglevel=2,
    )
    path = Path(directory) / "spiece.model"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    tokenizer = SiglipTokenizer(
        vocab_file=str(path), model_input_names=["input_ids"], model_max_length=model_max_length
    )
    logger.debug("trained SigLIP SentencePiece: %d pieces", len(tokenizer))
    return tokenizer
