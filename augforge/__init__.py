"""augforge: clean, rebalance and augment datasets into Arrow shards, stream them into PyTorch."""

__version__ = "0.1.0"

__all__ = ["__version__"]
