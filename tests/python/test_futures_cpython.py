"""CPython's own ProcessPoolExecutor tests (Lib/test/test_concurrent_futures.py, Debian package
libpython3.11-testsuite) run against picklewire.futures.ProcessPoolExecutor.

Every process-pool test class of that file is rebuilt here for the fork, spawn and forkserver
mixins with `executor_type` replaced by our class. Tests that name the class through the module
(`futures.ProcessPoolExecutor(...)`) see ours too: the test module's `futures` is replaced by a
view of `concurrent.futures` whose ProcessPoolExecutor is ours. Tests that start a fresh
interpreter with a script importing `from concurrent.futures import ProcessPoolExecutor` get the
script rewritten to import ours. What cannot apply is listed in docs/python.md
("picklewire.futures", "CPython's test suite").
"""
import concurrent.futures
import os
import sys
import types

import pytest

tcf = pytest.importorskip("test.test_concurrent_futures", reason="needs Debian's libpython3.11-testsuite")

import picklewire  # noqa: E402
from picklewire import futures as pwfutures  # noqa: E402


class _FuturesWithOurExecutor(types.ModuleType):
    """concurrent.futures, except that ProcessPoolExecutor is picklewire's."""

    def __getattr__(self, name):
        if name == "ProcessPoolExecutor":
            return pwfutures.ProcessPoolExecutor
        return getattr(concurrent.futures, name)


tcf.futures = _FuturesWithOurExecutor("concurrent.futures")

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(picklewire.__file__))
_original_assert_python_ok = tcf.assert_python_ok


def _assert_python_ok_with_our_executor(*args, **env):
    """Runs the script of a test with our executor (and our package on the child's path)."""
    args = list(args)
    if len(args) == 2 and args[0] == "-c":
        script = args[1]
        ours = script.replace("from concurrent.futures import ProcessPoolExecutor",
                              "from picklewire.futures import ProcessPoolExecutor")
        assert ours != script, "the test's script no longer imports the executor the way this rewrite expects"
        args[1] = ours
    path = os.pathsep.join(p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    return _original_assert_python_ok(*args, PYTHONPATH=path, **env)


tcf.assert_python_ok = _assert_python_ok_with_our_executor


class _OurExecutor:
    executor_type = pwfutures.ProcessPoolExecutor


_ALL_MIXINS = {
    "fork": ("Fork", tcf.ProcessPoolForkMixin),
    "forkserver": ("Forkserver", tcf.ProcessPoolForkserverMixin),
    "spawn": ("Spawn", tcf.ProcessPoolSpawnMixin),
}
# All three by default (~170 s on a 2-core machine, mostly the suite's own sleeps); a comma-separated
# subset narrows the run.
_CONTEXTS = os.environ.get("PICKLEWIRE_FUTURES_CPYTHON_CONTEXTS", "fork,spawn,forkserver").split(",")
_MIXINS = dict(_ALL_MIXINS[c.strip()] for c in _CONTEXTS if c.strip())
# Every class of the file that CPython runs with a process pool.
_TEST_CLASSES = [
    tcf.InitializerMixin,
    tcf.FailingInitializerMixin,
    tcf.ProcessPoolShutdownTest,
    tcf.WaitTests,
    tcf.AsCompletedTests,
    tcf.ProcessPoolExecutorTest,
    tcf.ExecutorDeadlockTest,
]

for _tests in _TEST_CLASSES:
    for _ctx_name, _mixin in _MIXINS.items():
        _name = f"TestPicklewire{_ctx_name}{_tests.__name__}"
        globals()[_name] = type(_name, (_tests, _OurExecutor, _mixin, tcf.BaseTestCase), {"__module__": __name__})
del _tests, _ctx_name, _mixin, _name


def test_every_class_runs_our_executor():
    """The substitution took: the classes above build picklewire's executor, not the standard one."""
    for ctx_name in _MIXINS:
        cls = globals()[f"TestPicklewire{ctx_name}ProcessPoolExecutorTest"]
        assert cls.executor_type is pwfutures.ProcessPoolExecutor
        assert cls("test_submit").executor_type is pwfutures.ProcessPoolExecutor
    assert tcf.futures.ProcessPoolExecutor is pwfutures.ProcessPoolExecutor
    generated = [n for n in globals() if n.startswith("TestPicklewire")]
    assert len(generated) == len(_TEST_CLASSES) * len(_MIXINS)
