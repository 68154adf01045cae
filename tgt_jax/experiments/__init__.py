"""Experiments over many runs: seeds, ablations, sweeps."""
