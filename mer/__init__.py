"""MER: offline multi-embedding retrieval pipeline (KDD'25 DCM + CR)."""

__version__ = "0.1.0"
