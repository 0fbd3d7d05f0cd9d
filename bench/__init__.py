"""dabench: comparative unsupervised domain adaptation of 2D/3D hand and human pose."""

__version__ = "0.1.0"
