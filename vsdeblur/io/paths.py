"""How a name given for INPUT or OUTPUT reaches FFmpeg: one rule for reading and writing.

FFmpeg takes the text before the first ':' of a name as a protocol when it consists of letters,
digits, '+', '-' and '.', so that a local file called `12:30 clip.mkv`, `ab:cd.mkv` or
`2024-01-01T12:00:00.mkv` is read as protocol "12", "ab" or "2024-01-01T12" and fails with
"Protocol not found". Here:

- "-" is a pipe (standard input or output);
- a name that exists locally is that file;
- a name of the form `scheme://...` that does not exist locally is a URL (http://, rtmp://,
  file://, ...), handed to FFmpeg unchanged;
- anything else is a local path.

Local paths reach FFmpeg through its `file:` protocol, which takes the rest of the name verbatim.

A name that exists may be something other than a regular file; `special_kind` says what
(`vsdeblur.io.writer` writes into named pipes and character devices, and refuses the rest).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

__all__ = ["PIPE", "ffmpeg_name", "is_url", "special_kind"]

PIPE = "-"
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # RFC 3986 scheme, then an authority


def is_url(name: str | Path) -> bool:
    """Whether `name` is a URL rather than a local path or the pipe."""
    text = str(name)
    return isinstance(name, str) and _URL.match(text) is not None and not Path(text).exists()


def ffmpeg_name(path: str | Path) -> str:
    """What to give FFmpeg to open the local file `path`, whatever colons its name holds."""
    return "file:" + str(path)


# what a name can be besides a regular file, as the one-line errors word it
SPECIAL_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
                 (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(path: str | Path, follow: bool = True) -> str | None:
    """What `path` is when it is neither a regular file nor absent: "a directory", "a named
    pipe", "a character device", "a block device" or "a socket"; else None (also for a dangling
    symlink). follow=False looks at a symlink itself, which is then None too."""
    try:
        mode = os.stat(path).st_mode if follow else os.lstat(path).st_mode
    except OSError:  # nothing there (or nothing this user may look at): the open says which
        return None
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), None)
