"""The old name of s2s.codecs.codec, kept for one release so `python -m s2s.codec` and
`import s2s.codec` go on working (the modules moved into subpackages in 2026-12)."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("s2s.codecs.codec", run_name="__main__", alter_sys=True)
else:
    from s2s.codecs import codec as _moved

    sys.modules[__name__] = _moved
