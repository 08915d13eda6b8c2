"""pibench: the cost of private (2PC) inference of transformer language-model variants."""

__version__ = "0.1.0"
