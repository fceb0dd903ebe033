"""Camera motion between neighbouring frames, per tile (estimator.py)."""

from vsdeblur.motion.estimator import Motion, PairMotion, combine, estimate, estimate_pair, still, working_factor

__all__ = ["Motion", "PairMotion", "combine", "estimate", "estimate_pair", "still", "working_factor"]
