"""Loaders of benchmark data kept on disk (annotations only; no images are shipped).

See :mod:`cirlib.data.annotations` for the CIRR, CIRCO and FashionIQ annotation loaders.
"""
