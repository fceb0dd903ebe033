"""User-facing errors: each carries one line that names the problem (and the fix), and the click
command class through which every front-end turns them into that line and an exit status."""

from __future__ import annotations

import signal

import click


class UsageError(ValueError):
    """Bad input from the user: a value, a file, a frame. Front-ends print str(e) and exit 2."""


class WeightsError(UsageError):
    """A weights file is missing, corrupt, truncated, or does not fit the requested model."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the same clean-up as Ctrl-C runs."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


class Command(click.Command):
    """A UsageError becomes one line on stderr and exit status 2; SIGTERM exits 143 and Ctrl-C
    130, each after the clean-up an interrupted run does (no half-written output)."""

    def invoke(self, ctx: click.Context):
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            click.echo(f"{ctx.command_path}: error: {exc}", err=True)
            ctx.exit(2)
        except Terminated:
            click.echo(f"{ctx.command_path}: terminated", err=True)
            ctx.exit(143)
        except KeyboardInterrupt:
            click.echo(f"{ctx.command_path}: interrupted", err=True)
            ctx.exit(130)
        finally:
            signal.signal(signal.SIGTERM, previous)
