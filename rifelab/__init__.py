"""rifelab: reproducible studies of RIFE frame interpolation and RollingDepth co-alignment."""

__version__ = "0.1.0"
