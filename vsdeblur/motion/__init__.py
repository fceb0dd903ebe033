"""Camera motion between neighbouring frames, per tile, from their luma (estimator.py): the
displacement of frame t's content from t-1 to t+1, with a confidence per tile.

    motion = estimate(previous, current, following)   # any neighbour may be None
    motion.displacement, motion.confidence, motion.centres, motion.sides, motion.chord(shutter)

The shutter from the video itself (shutter.py): each frame's evidence from its own blur and its
motion, pooled over a clip.

    shutter = pooled_shutter(shutter_evidence(frame, motion) for frame, motion in ...)
"""

from vsdeblur.motion.estimator import Motion, PairMotion, combine, estimate, estimate_pair, still, working_factor
from vsdeblur.motion.shutter import DEFAULT_SHUTTER, pooled_shutter, shutter_evidence

__all__ = ["DEFAULT_SHUTTER", "Motion", "PairMotion", "combine", "estimate", "estimate_pair", "pooled_shutter",
           "shutter_evidence", "still", "working_factor"]
