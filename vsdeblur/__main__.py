"""`python -m vsdeblur` is the `vsdeblur` command."""

from vsdeblur.cli import main

main(prog_name="vsdeblur")
