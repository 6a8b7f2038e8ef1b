"""The old name of s2s.models.frontend, kept for one release so `python -m s2s.frontend` and
`import s2s.frontend` go on working (the modules moved into subpackages in 2026-12)."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("s2s.models.frontend", run_name="__main__", alter_sys=True)
else:
    from s2s.models import frontend as _moved

    sys.modules[__name__] = _moved
