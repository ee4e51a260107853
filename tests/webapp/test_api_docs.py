"""The browsable API documentation page: login and role, local assets, renders in Chromium."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import PERSONA_PASSWORD

SIDECAR_BUNDLE = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"


@pytest.mark.django_db
def test_docs_page_needs_login_and_a_role(client: Client, outsider: Any, reader: Any) -> None:
    url = reverse("api-docs")
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")

    client.force_login(outsider)
    assert client.get(url).status_code == 403

    client.force_login(reader)
    response = client.get(url)
    assert response.status_code == 200
    page = response.content.decode()
    assert SIDECAR_BUNDLE in page
    assert "Research use only" in page
    # Every script and stylesheet is served from this site.
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert sources
    assert not [source for source in sources if source.startswith(("http:", "https:", "//"))]


@pytest.mark.django_db
def test_navigation_links_the_docs(client: Client, reader: Any) -> None:
    client.force_login(reader)
    assert f'href="{reverse("api-docs")}"' in client.get(reverse("case-list")).content.decode()


# chromium_page last: see test_browser_login.py.
@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_docs_render_the_schema_without_external_requests(
    live_server: Any, reader: Any, chromium_page: Any
) -> None:
    page = chromium_page
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(f"{live_server.url}/accounts/login/?next=/api/docs/")
    page.get_by_label("Username").fill("reader_ann")
    page.get_by_label("Password").fill(PERSONA_PASSWORD)
    with page.expect_response(lambda r: "/api/schema/" in r.url) as schema_info:
        page.get_by_role("button", name="Log in").click()
    schema = schema_info.value
    assert schema.status == 200
    assert "openapi" in schema.text()

    # Swagger UI draws one block per operation once it has parsed the schema.
    page.locator(".opblock-summary-path", has_text="/api/v1/cases/").first.wait_for(timeout=15000)
    assert page.locator(".info .title").inner_text().startswith("ceht-review API")
    external = [url for url in requested if not url.startswith((live_server.url, "data:"))]
    assert external == []
