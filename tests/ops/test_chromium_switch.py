"""``CALLSCRIBE_TEST_BROWSER=0`` skips the browser tests before anything is installed."""

from __future__ import annotations

import subprocess

import pytest

from tests.ops import chromium


def test_the_switch_skips_without_installing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSCRIBE_TEST_BROWSER", "0")
    monkeypatch.setattr(chromium, "find_chromium", lambda: "/usr/bin/chromium")

    def no_apt(*args: object, **kwargs: object) -> None:
        raise AssertionError("apt-get must not run")

    monkeypatch.setattr(subprocess, "run", no_apt)
    with pytest.raises(pytest.skip.Exception, match="CALLSCRIBE_TEST_BROWSER=0"):
        chromium.ensure_chromium()
