"""The old name of s2s.serve.converse, kept for one release so `python -m s2s.converse` and
`import s2s.converse` go on working (the modules moved into subpackages in 2026-12)."""

import runpy
import sys

if __name__ == "__main__":
    runpy.run_module("s2s.serve.converse", run_name="__main__", alter_sys=True)
else:
    from s2s.serve import converse as _moved

    sys.modules[__name__] = _moved
