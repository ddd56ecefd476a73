"""Zero-shot tagging: labels -> prompt-ensemble text embeddings -> per-item probabilities."""

from xmodal.pipelines.tagging.labels import TagError, TagSettings, load_labels, load_templates
from xmodal.pipelines.tagging.run import Classification, TagReport, classify_images, tag_collection

__all__ = [
    "Classification",
    "TagError",
    "TagReport",
    "TagSettings",
    "classify_images",
    "load_labels",
    "load_templates",
    "tag_collection",
]
