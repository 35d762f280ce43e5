"""cadenza: music generation with deep learning, from any audio or score to new music."""

__version__ = "0.1.0"
