"""Weight-based analysis of gated neurons (Gerstner & Schütze, 2025): library and scripts."""

__version__ = "0.1.0"
