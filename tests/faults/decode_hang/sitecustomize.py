"""Test helper for tests/test_resume.py: a model worker that stops answering.

With this folder on PYTHONPATH and EDGEEVAL_TEST_HANG_FLAG naming a file, every Python process
started so wraps llama-cpp-python's llama_decode: once that file exists, the next decode never
returns (it sleeps, using no CPU), as a hung driver or a deadlocked native call would.
"""

import os

_FLAG = os.environ.get("EDGEEVAL_TEST_HANG_FLAG")

if _FLAG:
    import time

    import llama_cpp

    _real = llama_cpp.llama_decode

    def _hanging(*args):  # type: ignore[no-untyped-def]
        if os.path.exists(_FLAG):
            while True:
                time.sleep(60)
        return _real(*args)

    llama_cpp.llama_decode = _hanging
