[VapourSynth Manifest V1]
libvsdeblur
