"""Camera motion between neighbouring frames, per tile, from their luma (estimator.py): the
displacement of frame t's content from t-1 to t+1, with a confidence per tile.

    motion = estimate(previous, current, following)   # any neighbour may be None
    motion.displacement, motion.confidence, motion.centres, motion.sides, motion.chord(shutter)

Along a video, each frame prepared once and each interval measured once (the same motion, for
about a third of the work):

    frame = prepare(luma)                          # per frame, as it arrives
    pair = estimate_pair(frame, following_frame)   # t's content into t+1, kept for t+1
    motion = combine(previous_pair.reversed(), pair)   # previous_pair: t-1's into t

The shutter from the video itself (shutter.py): each frame's evidence from its own blur and its
motion, pooled over a clip.

    shutter = pooled_shutter(shutter_evidence(frame, motion) for frame, motion in ...)
"""

from vsdeblur.motion.estimator import Motion, PairMotion, PreparedFrame, combine, estimate, estimate_pair, prepare, still, working_factor
from vsdeblur.motion.shutter import DEFAULT_SHUTTER, pooled_shutter, shutter_evidence

__all__ = ["DEFAULT_SHUTTER", "Motion", "PairMotion", "PreparedFrame", "combine", "estimate", "estimate_pair", "pooled_shutter",
           "prepare", "shutter_evidence", "still", "working_factor"]
