"""clearmark: remove visible watermarks from image archives at scale."""

__version__ = "0.1.0"
