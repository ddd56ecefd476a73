"""The contrastive part of the demo training: data as tensors, augmentation and the loss.

The training pixels come from the very image processor that is saved with the model, so the
saved directory sees through ``AutoProcessor`` what the model saw in training; the only
augmentation is a mirror image, an exact pixel permutation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPProcessor

from xmodal.demo.world import ATTRIBUTE_VALUES, CAPTION_FIELDS, captions_for, sample_world


@dataclass(frozen=True)
class TrainingData:
    """The training world as tensors: pixels, every caption's tokens and the attributes."""

    pixels: torch.Tensor  # (n, 3, s, s), from the saved image processor
    input_ids: torch.Tensor  # (n, captions per image, text_length)
    attention_mask: torch.Tensor
    codes: torch.Tensor  # (n, attributes): each image's attribute values as indices
    mentions: torch.Tensor  # (captions per image, attributes): which ones each caption names


def prepare_data(
    processor: CLIPProcessor, n_images: int, *, seed: int, world_size: int, text_length: int
) -> TrainingData:
    """Render ``n_images`` of the world and run them through ``processor``, the one saved."""
    samples = list(sample_world(n_images, seed=seed, size=world_size))
    pixel_chunks = []
    for start in range(0, len(samples), 256):
        images = [image for _, image in samples[start : start + 256]]
        pixel_chunks.append(processor.image_processor(images, return_tensors="pt")["pixel_values"])
    captions = [captions_for(attrs) for attrs, _ in samples]
    per_image = len(captions[0])
    flat = [caption for group in captions for caption in group]
    tokens = processor.tokenizer(
        flat,
        padding="max_length",
        truncation=True,
        max_length=text_length,
        return_tensors="pt",
    )
    shape = (len(samples), per_image, text_length)
    names = list(ATTRIBUTE_VALUES)
    codes = [[ATTRIBUTE_VALUES[n].index(getattr(a, n)) for n in names] for a, _ in samples]
    mentions = [[n in fields for n in names] for fields in CAPTION_FIELDS]
    return TrainingData(
        torch.cat(pixel_chunks),
        tokens["input_ids"].reshape(shape),
        tokens["attention_mask"].reshape(shape),
        torch.tensor(codes),
        torch.tensor(mentions),
    )


def augment(pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A mirror image for half the batches: an exact pixel permutation that keeps every attribute.

    (Right-angle rotations were tried and slowed shape learning: they add orientations the
    world never draws.)
    """
    if int(torch.randint(2, (1,), generator=generator)):
        return pixels.flip(-1)
    return pixels


def clip_loss(logits_per_text: torch.Tensor, describes: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE where every image a caption truly describes is a positive.

    ``describes[j, i]`` says caption ``j`` is true of image ``i`` (its own image always is). The
    world repeats attribute combinations, so a batch holds several images that fit one caption;
    plain InfoNCE would push them apart as negatives. The target of each row is spread evenly
    over its positives; with one positive per row this is exactly CLIP's loss.
    """
    match = describes.float()
    text_targets = match / match.sum(dim=1, keepdim=True)
    image_targets = match.t() / match.t().sum(dim=1, keepdim=True)
    text_loss = torch.nn.functional.cross_entropy(logits_per_text, text_targets)
    image_loss = torch.nn.functional.cross_entropy(logits_per_text.t(), image_targets)
    return (text_loss + image_loss) / 2


def describes(
    data: TrainingData, index: torch.Tensor, choice: torch.Tensor, identical: bool
) -> torch.Tensor:
    """(captions, images) truth matrix of a batch; ``identical`` counts only equal texts."""
    if identical:
        ids = data.input_ids[index, choice]
        return (ids[:, None, :] == ids[None, :, :]).all(-1)
    codes = data.codes[index]
    named = data.mentions[choice]  # (batch, attributes)
    agree = codes[:, None, :] == codes[None, :, :]  # caption's image vs each image
    return (agree | ~named[:, None, :]).all(-1)
