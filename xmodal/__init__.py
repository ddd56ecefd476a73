"""xmodal: cross-modal image/text retrieval."""
