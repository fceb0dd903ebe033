"""`vsdeblur benchmark`'s run: the set filmed and restored through vsdeblur-stream (quality.py),
the deconvolution prior's variants and the motion table (motion_prior.py), all scored alike."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from vsdeblur.measure import motion_prior, quality
from vsdeblur.metrics import vmaf_unavailable


def run(setup: quality.Setup, weights: Path | None, log=print) -> tuple[str, dict]:
    """Build (or reuse) the set, restore it with stage 1 alone, with both stages and with the
    deconvolution prior alone (estimated and true motion), score it; measure the motion."""
    photos = quality.photos_of(setup.material, setup.clips)
    quality.build_set(setup, photos, log)
    variants = {"stage 1": {"weights": weights, "stage": 1}, "both stages": {"weights": weights}}
    quality.restore(setup, photos, variants, log)
    motion_rows = motion_prior.run(setup, photos, log)
    names = [*variants, *motion_prior.PRIOR_VARIANTS]
    rows = list(quality.score(setup, photos, names))
    report = {"set": setup.describe(photos), "weights": str(weights) if weights else "default",
              "rows": [asdict(r) for r in rows], "motion": [asdict(r) for r in motion_rows]}
    text = f"{quality.table(rows, names)}\n\n{motion_prior.motion_table(motion_rows)}"
    reason = vmaf_unavailable(*setup.size)
    return (text if reason is None else f"{text}\nno VMAF: {reason}"), report
