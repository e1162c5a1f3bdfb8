"""Pure protocol codecs, one module per provider: frames in, typed events out; no I/O."""
