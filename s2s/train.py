"""The old name of s2s.training.train, kept for one release so `python -m s2s.train` and
`import s2s.train` go on working (the modules moved into subpackages in 2026-12)."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("s2s.training.train", run_name="__main__", alter_sys=True)
else:
    from s2s.training import train as _moved

    sys.modules[__name__] = _moved
