"""The old name of s2s.codecs.world_vq, kept for one release so `python -m s2s.world_vq` and
`import s2s.world_vq` go on working (the modules moved into subpackages in 2026-12)."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("s2s.codecs.world_vq", run_name="__main__", alter_sys=True)
else:
    from s2s.codecs import world_vq as _moved

    sys.modules[__name__] = _moved
