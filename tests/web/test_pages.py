"""The support page's sign-in, CSRF and 403 (in-process, no browser), and the JSON API beside it unchanged."""

from __future__ import annotations

import html
import re

from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.tokens import issue_token
from tests.conftest import ADA, ADMIN, BEN, SECRET, auth, query, token_for

Client = AsyncTestClient[Litestar]


async def _sign_in(client: Client, token: str) -> object:
    await client.get("/support/sign-in")
    return await client.post("/support/sign-in", data={"csrf": client.cookies.get("support-sign-in", ""),
                                                        "token": token}, follow_redirects=False)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def test_without_a_session_every_page_sends_the_sign_in_form(client: Client) -> None:
    for path in ("/support/", "/support/users", f"/support/users/{ADA[0]}", "/support/overview/live"):
        response = await client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"] == "/support/sign-in", path
    poll = await client.get("/support/overview/live", headers={"HX-Request": "true"}, follow_redirects=False)
    assert poll.status_code == 401 and poll.headers["HX-Redirect"] == "/support/sign-in"


async def test_sign_in_keeps_an_httponly_strict_session_cookie_for_the_page_only(client: Client) -> None:
    response = await _sign_in(client, token_for(ADMIN))
    assert response.status_code == 303  # type: ignore[attr-defined]
    cookie = response.headers["set-cookie"].lower()  # type: ignore[attr-defined]
    assert "support-session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "path=/support" in cookie
    page = await client.get("/support/")
    assert page.status_code == 200 and "Recovery overview" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


async def test_the_sign_in_form_itself_needs_its_csrf_value(client: Client) -> None:
    await client.get("/support/sign-in")
    response = await client.post("/support/sign-in", data={"csrf": "forged", "token": token_for(ADMIN)},
                                 follow_redirects=False)
    assert response.status_code == 400 and "expired" in response.text
    assert "support-session" not in response.headers.get("set-cookie", "")


async def test_a_bad_or_expired_token_is_refused_with_the_reason(client: Client) -> None:
    response = await _sign_in(client, issue_token("another-secret-that-is-long-enough-!!", *ADMIN[:2]))
    assert response.status_code == 400 and "not accepted" in response.text  # type: ignore[attr-defined]


async def test_a_non_admin_gets_403_and_no_data_whatever_the_credential(client: Client) -> None:
    response = await _sign_in(client, token_for(ADA))
    assert response.status_code == 403 and "Not allowed" in response.text  # type: ignore[attr-defined]
    assert "support-session" not in response.headers.get("set-cookie", "")  # type: ignore[attr-defined]
    client.cookies.set("auth-token", token_for(BEN))
    for path in ("/support/", f"/support/users/{ADA[0]}", "/support/users?q=a"):
        page = await client.get(path)
        assert page.status_code == 403 and ADA[1] not in page.text and "Not allowed" in page.text


async def test_an_email_alias_of_an_admin_is_no_admin(client: Client) -> None:
    alias = issue_token(SECRET, "user_NotAUserNotAUserNotAU", ADMIN[1])
    response = await _sign_in(client, alias)
    assert response.status_code == 403  # type: ignore[attr-defined]


async def test_the_apps_auth_token_cookie_of_an_admin_signs_in(client: Client) -> None:
    client.cookies.set("auth-token", token_for(ADMIN))
    page = await client.get("/support/")
    assert page.status_code == 200 and "Recovery overview" in page.text


# Every POST of the page and how this file checks its CSRF token (the API's cookie rule leaves them to it).
PAGE_POSTS = {"/support/users/{user_id}/redrive", "/support/users/{user_id}/review", "/support/sign-out",
              "/support/sign-in"}


async def test_every_page_post_is_one_whose_csrf_check_is_tested_here(app: Litestar) -> None:
    from service.api.auth import OWN_CSRF_CHECK

    own = {re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
           for route in app.routes for handler in getattr(route, "route_handlers", [])
           if handler.opt.get(OWN_CSRF_CHECK) and "POST" in getattr(handler, "http_methods", ())}
    assert own == PAGE_POSTS


async def test_every_post_needs_the_sessions_csrf_token(client: Client) -> None:
    await _sign_in(client, token_for(ADMIN))
    user_page = await client.get(f"/support/users/{ADA[0]}")
    token = _csrf(user_page.text)
    for action in ("redrive", "review"):
        refused = await client.post(f"/support/users/{ADA[0]}/{action}", data={"csrf": "0" * 64})
        assert refused.status_code == 403 and "Nothing was changed" in refused.text
        bare = await client.post(f"/support/users/{ADA[0]}/{action}")
        assert bare.status_code == 403
        accepted = await client.post(f"/support/users/{ADA[0]}/{action}", headers={"X-CSRF-Token": token})
        assert accepted.status_code == 200, action
    assert (await client.post("/support/sign-out", follow_redirects=False)).status_code == 403
    out = await client.post("/support/sign-out", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and 'support-session=""' in out.headers["set-cookie"]


async def test_the_json_support_api_beside_the_page_still_takes_bearer_tokens(client: Client) -> None:
    summary = await client.get("/v1/support/summary", headers=auth(ADMIN))
    assert summary.status_code == 200 and "users_by_state" in summary.json()
    review = await client.post(f"/v1/support/users/{ADA[0]}/review", headers=auth(ADMIN))
    assert review.status_code in (200, 404)
    assert (await client.get("/v1/support/summary")).status_code == 401


async def test_htmx_is_served_by_the_service_itself(client: Client) -> None:
    script = await client.get("/support/static/htmx.min.js")
    assert script.status_code == 200 and script.text.startswith("/*! htmx.org 2.")
    assert "0BSD" in script.text[:300]


async def test_with_the_apps_cookie_the_pages_forms_work_by_their_csrf_token(client: Client) -> None:
    """The API's cookie CSRF rule (JSON only) leaves the page's forms to the page's own token check."""
    client.cookies.set("auth-token", token_for(ADMIN))
    token = _csrf((await client.get(f"/support/users/{ADA[0]}")).text)
    assert (await client.post(f"/support/users/{ADA[0]}/review", data={"csrf": token})).status_code == 200
    assert (await client.post(f"/support/users/{ADA[0]}/review", data={"csrf": "0" * 64})).status_code == 403


async def test_the_users_quarantine_and_conflicts_page_through_every_row_by_next_links(
    client: Client, db_path: str
) -> None:
    """Past the first 50, "next" links (plain links: no script needed) carry on after the last row shown,
    until every quarantined record and every waiting conflict has been shown once."""
    latecomer = ("user_LateLateLateLateLate0", "late@example.com", "user")  # unknown: all quarantined
    entries = [{"id": f"entry_{i:04d}", "timestamp": "2025-01-01T10:00:00.000Z", "duration": 60,
                "type": "practice", "updatedAt": "2025-01-01T10:00:00.000Z"} for i in range(120)]
    pushed = await client.post("/api/sync/push", json={"changes": {"entries": entries}}, headers=auth(latecomer))
    assert pushed.status_code == 200, pushed.text
    # Waiting conflicts, as a merge would archive them (one statement: it runs on either engine).
    values = ", ".join(["(?, 'logbook_entry', ?, '{}', ?, 0, 'older', 'upl_x', '2025-01-01')"] * 120)
    insert = f"INSERT INTO recovery_archive (user_id, entity_type, entity_id, data, checksum, updated_ms, reason, upload_id, archived_at) VALUES {values}"  # noqa: E501, S608 - placeholders only
    query(db_path, insert,
          tuple(v for i in range(120) for v in (latecomer[0], f"conflict_{i:04d}", f"{i:064d}")))
    assert (await _sign_in(client, token_for(ADMIN))).status_code == 303  # type: ignore[attr-defined]
    for testid, item, pattern in (("quarantine", "quarantined", r"entry_\d{4}"),
                                  ("conflicts", "conflict", r"conflict_\d{4}")):
        seen: list[str] = []
        path: str | None = f"/support/users/{latecomer[0]}"
        pages = 0
        while path is not None:
            page = await client.get(path)
            assert page.status_code == 200
            pages += 1
            assert page.text.count(f'data-testid="{item}"') == (50 if pages < 3 else 20)
            found = re.findall(rf'<code>({pattern})</code>', page.text)
            seen.extend(dict.fromkeys(found))  # each row names its id once in its heading
            assert (f'data-testid="{testid}-first"' in page.text) == (pages > 1)
            following = re.search(rf'href="([^"]+)" data-testid="{testid}-next"', page.text)
            path = html.unescape(following.group(1)).split("#")[0] if following else None
        assert pages == 3 and len(seen) == len(set(seen)) == 120, testid
    # A link this page did not make starts at the first page rather than failing.
    odd = await client.get(f"/support/users/{latecomer[0]}", params={"quarantine_after": "-1; drop"})
    assert odd.status_code == 200 and odd.text.count('data-testid="quarantined"') == 50
