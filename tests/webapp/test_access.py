"""Access control over every URL pattern, found by walking the URL resolver.

Only ``/healthz`` is served to anonymous users (besides the login page itself, which must be).
Every other URL redirects anonymous browsers to the login page or returns 401/403 for the API.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve

from webapp.core.models import Case

# URL names served without login: the health probe and the login page.
ANONYMOUS_URL_NAMES = {"healthz", "login"}
LOGIN_PREFIXES = ("/accounts/login/", "/admin/login/")
CASE_CODE = "WALK-001"
# Values for the named groups of URL patterns; "1" is used for any other group.
SAMPLE_ARGUMENTS = {
    "code": CASE_CODE,
    "app_label": "core",
    "format": "json",
    "url": "no-such-admin-page/",
    "content_type_id": "1",
    "object_id": "1",
    "pk": "1",
    "id": "1",
}
# The admin's own login form is shadowed on purpose, so the throttled login page is the only one.
SHADOWED_URL_NAMES = {"admin:login": "admin-login-redirect"}
SAMPLE_UUID = "00000000-0000-4000-8000-000000000001"
_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>")


@dataclass(frozen=True)
class WalkedUrl:
    path: str
    name: str


def _sample_for(name: str, group_regex: str) -> str:
    """Return a value for a named group that its regex accepts (path converters included)."""
    candidates = [SAMPLE_ARGUMENTS.get(name, "1"), "1", SAMPLE_UUID, "sample"]
    for candidate in candidates:
        if re.fullmatch(group_regex, candidate):
            return candidate
    raise AssertionError(
        f"no sample value matches group {name!r} with regex {group_regex!r}; extend SAMPLE_ARGUMENTS"
    )


def _fill_regex(regex: str) -> str:
    """Turn a pattern's regex into a concrete path by substituting each named group."""
    result = []
    position = 0
    while (match := _GROUP.search(regex, position)) is not None:
        result.append(regex[position : match.start()])
        # Skip to the parenthesis that closes this group.
        depth = 1
        index = match.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(regex[index], 0)
            index += 1
        result.append(_sample_for(match.group("name"), regex[match.end() : index - 1]))
        position = index
    result.append(regex[position:])
    path = "".join(result)
    for token, replacement in (
        ("^", ""),
        ("$", ""),
        ("\\Z", ""),
        ("\\.", "."),
        ("\\-", "-"),
        ("/?", "/"),
    ):
        path = path.replace(token, replacement)
    return path


def walk_urls() -> list[WalkedUrl]:
    """Return one concrete path for every URL pattern in the project."""
    found: list[WalkedUrl] = []

    def visit(patterns: list[Any], prefix: str, namespace: str) -> None:
        for entry in patterns:
            piece = _fill_regex(entry.pattern.regex.pattern)
            if isinstance(entry, URLResolver):
                inner_namespace = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                visit(entry.url_patterns, prefix + piece, inner_namespace)
            elif isinstance(entry, URLPattern):
                found.append(
                    WalkedUrl(
                        path="/" + prefix + piece, name=f"{namespace}{entry.name or '(unnamed)'}"
                    )
                )

    visit(get_resolver().url_patterns, "", "")
    return found


ALL_URLS = walk_urls()


def test_walk_finds_the_project_urls() -> None:
    names = {url.name for url in ALL_URLS}
    for expected in (
        "case-list",
        "case-detail",
        "healthz",
        "login",
        "logout",
        "api-schema",
        "v1:case-list",
        "admin:index",
        "review-page",
        "wado-uri",
        "wado-rs-study",
        "wado-rs-study-metadata",
        "wado-rs-series",
        "wado-rs-series-metadata",
        "wado-rs-instance",
        "wado-rs-metadata",
        "wado-rs-frames",
        "research:exports",
        "research:export-download",
        "research:import",
        "research:import-confirm",
        "research:performance",
        "research:performance-figure",
        "research:readers",
        "research:mask-download",
        "research:operations",
        "v1:prediction-list",
        "v1:ground-truth-list",
        "v1:adjudication-list",
        "v1-export",
    ):
        assert expected in names
    assert len(ALL_URLS) > 40  # the admin alone contributes dozens


@pytest.mark.parametrize("url", ALL_URLS, ids=lambda url: f"{url.name}:{url.path}")
def test_walked_path_resolves_to_its_pattern(url: WalkedUrl) -> None:
    match = resolve(url.path)
    expected = SHADOWED_URL_NAMES.get(url.name, url.name)
    assert expected.endswith(match.url_name or "(unnamed)")


@pytest.fixture
def walk_case(db: None) -> Case:
    return Case.objects.create(code=CASE_CODE)


def _is_login_redirect(response: Any) -> bool:
    return response.status_code == 302 and response["Location"].startswith(LOGIN_PREFIXES)


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_requests_are_rejected_everywhere(
    client: Client, walk_case: Case, method: str
) -> None:
    served = []
    for url in ALL_URLS:
        if url.name in ANONYMOUS_URL_NAMES:
            continue
        response = getattr(client, method)(url.path)
        if url.name == "admin:logout":
            # The admin logs out (a no-op when anonymous) and sends the browser to its index,
            # which redirects to the login page; nothing is served.
            if response.status_code != 302 or response["Location"] != "/admin/":
                served.append(f"{method.upper()} {url.path} ({url.name}) -> {response.status_code}")
        elif response.status_code not in (401, 403) and not _is_login_redirect(response):
            # Pages redirect to the login page; API endpoints return 401 or 403.
            served.append(f"{method.upper()} {url.path} ({url.name}) -> {response.status_code}")
    assert served == []


def test_anonymous_api_request_gets_401_with_token_challenge(client: Client) -> None:
    response = client.get("/api/v1/cases/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


def test_healthz_is_served_anonymously(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200


def test_user_without_role_is_rejected_everywhere(
    client: Client, outsider: Any, walk_case: Case
) -> None:
    client.force_login(outsider)
    served = []
    for url in ALL_URLS:
        if url.name in ANONYMOUS_URL_NAMES or url.name in ("logout", "admin:logout"):
            continue
        response = client.get(url.path)
        # Admin pages send non-staff users to the login page; everything else returns 403.
        if response.status_code != 403 and not _is_login_redirect(response):
            served.append(f"GET {url.path} ({url.name}) -> {response.status_code}")
    assert served == []


@pytest.mark.parametrize(
    "persona", ["reader", "coordinator", "researcher", "adjudicator", "admin_user"]
)
def test_each_role_opens_cases_and_api(
    client: Client, walk_case: Case, persona: str, request: pytest.FixtureRequest
) -> None:
    client.force_login(request.getfixturevalue(persona))
    assert client.get("/").status_code == 200
    assert client.get(f"/cases/{CASE_CODE}/").status_code == 200
    assert client.get("/api/v1/cases/").status_code == 200
    assert client.get("/api/schema/").status_code == 200


def test_reader_cannot_open_admin_site(client: Client, reader: Any) -> None:
    client.force_login(reader)
    response = client.get("/admin/")
    assert _is_login_redirect(response)


def test_admin_opens_admin_site(client: Client, admin_user: Any) -> None:
    client.force_login(admin_user)
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/core/auditevent/").status_code == 200


def test_outsider_rejection_names_roles(client: Client, outsider: Any) -> None:
    client.force_login(outsider)
    response = client.get("/")
    assert response.status_code == 403
    assert b"needs one of these roles" in response.content


def test_logout_needs_post_and_ends_the_session(client: Client, reader: Any) -> None:
    client.force_login(reader)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert _is_login_redirect(client.get("/"))
