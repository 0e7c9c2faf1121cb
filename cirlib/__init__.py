"""cirlib: a Jupyter companion for zero-shot Composed Image Retrieval papers."""

__version__ = "0.1.0"
