"""The old name of s2s.data.corpus, kept for one release so `python -m s2s.corpus` and
`import s2s.corpus` go on working (the modules moved into subpackages in 2026-12)."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("s2s.data.corpus", run_name="__main__", alter_sys=True)
else:
    from s2s.data import corpus as _moved

    sys.modules[__name__] = _moved
