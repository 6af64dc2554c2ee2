"""The test suite's own rule: under CI=true, a test that skips for anything a CPU machine can have fails."""

from pathlib import Path

from conftest import SHARED


def test_under_ci_a_skip_fails_unless_it_is_a_cuda_or_browser_skip(pytester, monkeypatch):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(
        """
        import pytest

        def test_extra_missing():
            pytest.importorskip("no_such_extra_package")

        @pytest.mark.skipif(True, reason="needs CUDA")
        def test_gpu():
            pass

        def test_plain():
            pass
        """
    )
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PLEAT_DATA", str(SHARED))
    result = pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, skipped=1, failed=1)
    monkeypatch.delenv("CI")
    pytester.runpytest_inprocess("-p", "no:xdist", "-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2)
