"""Video input and output with PyAV, shared by the stream CLI and the batch pipeline.

Data flows one way: `Reader` (decode to RGB numpy frames with their pts) -> the engine ->
`Writer` (encode with the source's timestamps and colour, copy every other stream).
See the docstrings of `vsdeblur.io.reader`, `vsdeblur.io.writer` and `vsdeblur.io.colour`.
"""

from vsdeblur.io.colour import Colour
from vsdeblur.io.reader import Frame, Reader, VideoInfo
from vsdeblur.io.writer import Writer, encoder_settings

__all__ = ["Colour", "Frame", "Reader", "VideoInfo", "Writer", "encoder_settings"]
