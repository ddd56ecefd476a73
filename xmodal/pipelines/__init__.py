"""Composition: sources -> decode -> encode -> store; search."""
