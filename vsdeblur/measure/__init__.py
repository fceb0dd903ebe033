"""Measurements of the deblurrer, each behind a `vsdeblur` command (cli.py imports them; they
never import the CLI):

- `speed`: throughput of the bare networks, the engine and the doors onto it (`vsdeblur bench`);
- `suite`: the GPU check built from speed's parts (`vsdeblur bench --suite gpu`);
- `quality`: how much a model deblurs camera-like blur on held-out photographs, against the
  baselines any model must beat (`vsdeblur benchmark`); it blurs with vsdeblur.blur and scores
  with vsdeblur.metrics; `motion_prior` adds its table of the motion estimator's blur error and
  its rows for the deconvolution prior alone.
"""
