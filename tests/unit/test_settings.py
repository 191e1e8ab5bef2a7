from __future__ import annotations

import os
import re
from dataclasses import fields
from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.settings import PREFIX, Settings, env_name, resolve_settings

ROOT = Path(__file__).resolve().parents[2]
#: Where finscore's own code lives (bench hands its FastAPI workers their arguments in variables of its own).
PRODUCT = ("engine", "clients", "kernels", "model_repo")
NAME = re.compile(r"\bFINSCORE_[A-Z0-9_]*[A-Z0-9]\b")


@pytest.fixture
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith(PREFIX)]:
        monkeypatch.delenv(name)
    return monkeypatch


def test_flag_beats_environment_beats_default(clean: pytest.MonkeyPatch) -> None:
    assert resolve_settings() == Settings()
    clean.setenv("FINSCORE_GRPC_PORT", "9001")
    clean.setenv("FINSCORE_REPO", "/srv/models")
    clean.setenv("FINSCORE_URL", "  ")  # blank: unset
    s = resolve_settings()
    assert (s.grpc_port, s.repo, s.url) == (9001, Path("/srv/models"), Settings().url)
    s = resolve_settings(grpc_port=7001, repo=None)
    assert (s.grpc_port, s.repo) == (7001, Path("/srv/models"))


def test_settings_are_read_when_asked_not_at_import(clean: pytest.MonkeyPatch) -> None:
    assert resolve_settings().require_gpu is False
    clean.setenv("FINSCORE_REQUIRE_GPU", "yes")
    clean.setenv("FINSCORE_FRAUD_REDIS", "redis://127.0.0.1:6379/0")
    s = resolve_settings()
    assert s.require_gpu is True and s.fraud_redis == "redis://127.0.0.1:6379/0"


def test_bad_environment_value_is_one_usage_sentence(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("FINSCORE_HTTP_PORT", "eighty")
    with pytest.raises(UsageError, match="^FINSCORE_HTTP_PORT must be a whole number, got 'eighty'$"):
        resolve_settings()


def test_a_flag_that_is_no_setting_is_refused() -> None:
    with pytest.raises(TypeError, match="grpc_prot"):
        resolve_settings(grpc_prot=1)


def test_secrets_stay_out_of_repr(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("FINSCORE_PROTECT_KEYS", "v1 " + "ab" * 32)
    s = resolve_settings()
    assert s.protect_keys is not None and "ab" * 32 not in repr(s)


def test_every_finscore_variable_in_the_product_is_a_setting() -> None:
    known = {env_name(f.name) for f in fields(Settings)}
    found: dict[str, Path] = {}
    for top in PRODUCT:
        for path in (ROOT / top).rglob("*.py"):
            for name in NAME.findall(path.read_text(encoding="utf-8")):
                found.setdefault(name, path)
    unknown = {name: str(path.relative_to(ROOT)) for name, path in found.items() if name not in known}
    assert not unknown, f"FINSCORE_* names that are no field of Settings: {unknown}"
    assert found, "the scan found no FINSCORE_ name at all: it looks in the wrong place"


def test_the_readme_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(FINSCORE_[A-Z_]+)` \| ([^|]+) \|", readme, flags=re.MULTILINE))
    expected = {env_name(f.name): f"`{f.metadata['flag']}`" if f.metadata["flag"] else "—" for f in fields(Settings)}
    assert {k: v.strip() for k, v in table.items()} == expected
