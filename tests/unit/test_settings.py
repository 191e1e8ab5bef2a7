from __future__ import annotations

from pathlib import Path

import pytest

from engine.settings import Settings, resolve_settings


def test_flag_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_settings() == Settings()
    monkeypatch.setenv("FINSCORE_GRPC_PORT", "9001")
    monkeypatch.setenv("FINSCORE_REPO", "/srv/models")
    s = resolve_settings()
    assert (s.grpc_port, s.repo) == (9001, Path("/srv/models"))
    s = resolve_settings(grpc_port=7001, repo=None)
    assert (s.grpc_port, s.repo) == (7001, Path("/srv/models"))


def test_bad_environment_value_is_one_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINSCORE_HTTP_PORT", "eighty")
    with pytest.raises(ValueError, match="FINSCORE_HTTP_PORT must be a whole number, got 'eighty'"):
        resolve_settings()
