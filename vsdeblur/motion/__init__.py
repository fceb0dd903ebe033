"""Camera motion between neighbouring frames, per tile, from their luma (estimator.py): the
displacement of frame t's content from t-1 to t+1, with a confidence per tile.

    motion = estimate(previous, current, following)   # any neighbour may be None
    motion.displacement, motion.confidence, motion.centres, motion.sides, motion.chord(shutter)
"""

from vsdeblur.motion.estimator import Motion, PairMotion, combine, estimate, estimate_pair, still, working_factor

__all__ = ["Motion", "PairMotion", "combine", "estimate", "estimate_pair", "still", "working_factor"]
