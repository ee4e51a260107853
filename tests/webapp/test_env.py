"""Environment readers: valid values parse, malformed ones raise naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from webapp.env import env_bool, env_int, env_list, env_path, parse_database_url

BASE = Path("/srv/ceht")


def test_sqlite_url_relative_path_is_under_base_dir() -> None:
    config = parse_database_url("sqlite:///data/db.sqlite3", base_dir=BASE)
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == "/srv/ceht/data/db.sqlite3"


def test_sqlite_url_absolute_path_is_kept() -> None:
    config = parse_database_url("sqlite:////var/lib/ceht/db.sqlite3", base_dir=BASE)
    assert config["NAME"] == "/var/lib/ceht/db.sqlite3"


def test_postgres_url_parts_are_split() -> None:
    config = parse_database_url(
        "postgresql://ceht:p%40ss@db.internal:6543/ceht_prod?sslmode=require", base_dir=BASE
    )
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["NAME"] == "ceht_prod"
    assert config["USER"] == "ceht"
    assert config["PASSWORD"] == "p@ss"
    assert config["HOST"] == "db.internal"
    assert config["PORT"] == "6543"
    assert config["OPTIONS"] == {"sslmode": "require"}


def test_postgres_short_scheme_without_password() -> None:
    config = parse_database_url("postgres://postgres@127.0.0.1/ceht", base_dir=BASE)
    assert config["USER"] == "postgres"
    assert config["PASSWORD"] == ""
    assert config["PORT"] == ""


@pytest.mark.parametrize(
    ("url", "expected_fragment"),
    [
        ("bogus", "unsupported scheme '(none)'"),
        ("mysql://root:secret@localhost/ceht", "unsupported scheme 'mysql'"),
        ("sqlite://host/db.sqlite3", "has a host part"),
        ("sqlite:///", "names no database file"),
        ("postgres://user@localhost/", "names no database"),
        ("postgres://user@localhost:notaport/ceht", "invalid port"),
    ],
)
def test_malformed_database_url_is_rejected(url: str, expected_fragment: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_database_url(url, base_dir=BASE)
    assert "DATABASE_URL" in str(raised.value)
    assert expected_fragment in str(raised.value)


def test_database_url_error_hides_password() -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_database_url("mysql://root:hunter2secret@localhost/ceht", base_dir=BASE)
    assert "hunter2secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), ("on", True), ("no", False), ("0", False)]
)
def test_env_bool_accepts_common_words(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("CEHT_TEST_FLAG", raw)
    assert env_bool("CEHT_TEST_FLAG", not expected) is expected


def test_env_bool_unset_or_blank_uses_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CEHT_TEST_FLAG", raising=False)
    assert env_bool("CEHT_TEST_FLAG", True) is True
    monkeypatch.setenv("CEHT_TEST_FLAG", "  ")
    assert env_bool("CEHT_TEST_FLAG", False) is False


def test_env_bool_rejects_maybe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEBUG", "maybe")
    with pytest.raises(ImproperlyConfigured) as raised:
        env_bool("DEBUG", False)
    assert "DEBUG='maybe' is not a boolean" in str(raised.value)


def test_env_int_rejects_text_and_values_below_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CEHT_TEST_COUNT", "five")
    with pytest.raises(ImproperlyConfigured, match=r"CEHT_TEST_COUNT='five' is not an integer"):
        env_int("CEHT_TEST_COUNT", 5)
    monkeypatch.setenv("CEHT_TEST_COUNT", "0")
    with pytest.raises(ImproperlyConfigured, match=r"CEHT_TEST_COUNT=0 is below the minimum 1"):
        env_int("CEHT_TEST_COUNT", 5, minimum=1)


def test_env_list_drops_empty_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", " a.example.org, ,b.example.org,")
    assert env_list("ALLOWED_HOSTS", []) == ["a.example.org", "b.example.org"]


def test_env_path_relative_value_is_under_base_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDIA_ROOT", "media-files")
    assert env_path("MEDIA_ROOT", Path("/unused"), base_dir=BASE) == Path("/srv/ceht/media-files")
