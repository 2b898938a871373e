"""hashbay: agent daemon for a Bitcoin miner with hot-swappable hashboard modules."""

__version__ = "0.1.0"
