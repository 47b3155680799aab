"""The suite installs Chromium only where that was asked for (CI, or DRS_INSTALL_BROWSER=1)."""

from __future__ import annotations

import pytest

from tests.e2e import conftest as e2e

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize(
    ("env", "allowed"),
    [
        ({}, False),
        ({"CI": "false"}, False),
        ({"DRS_INSTALL_BROWSER": "0"}, False),
        ({"DRS_INSTALL_BROWSER": "yes"}, False),
        ({"CI": "true"}, True),
        ({"DRS_INSTALL_BROWSER": "1"}, True),
    ],
)
def test_installing_needs_ci_or_the_opt_in(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], allowed: bool
) -> None:
    for name in ("CI", e2e.INSTALL_OPT_IN):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert e2e.install_allowed() is allowed


def test_without_the_opt_in_nothing_is_installed_and_the_reason_names_it(
    monkeypatch: pytest.MonkeyPatch, pytestconfig: pytest.Config
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(e2e.INSTALL_OPT_IN, raising=False)
    # No apt-get to be found either: had it tried, it would give that reason instead.
    monkeypatch.setenv("PATH", "")
    before = list(e2e.installed)
    reason = e2e.install_chromium(pytestconfig)
    assert "DRS_INSTALL_BROWSER=1" in reason and "CI=true" in reason
    assert e2e.installed == before
