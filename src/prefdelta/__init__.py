"""prefdelta: reasoning preference datasets built, published, reviewed and trained by delta."""

__version__ = "0.1.0"
