"""The support page in a real browser: the system's Chromium driven by Playwright, against the real
service in a subprocess. Each test starts from the sign-in form, as a support person would."""

from __future__ import annotations

import copy
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADA, ADMIN, BEN, add_users, load_fixture, query, token_for
from tests.reliability.liveserver import ServerProcess, live_server
from tests.web.browser import CHROMIUM_ARGS, chromium_path, screenshot_dir

playwright_api = pytest.importorskip("playwright.sync_api", reason="BROWSER TESTS NOT RUN: Playwright missing")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Carla's devices uploaded before her account was re-created: her records wait in quarantine.
CARLA = ("user_Car1aCar1aCar1aCar1a", "carla.cello@example.com", "user")
DEVICE = "dev_a1B2c3D4e5F6g7H8"
PHONE = "dev_p9H8o7N6e5P4h3O2"
EXPORT = "exports/mirubato-data-export-2025-11-30.json"


def _bearer(user: tuple[str, str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_for(user)}"}


def _upload(server: ServerProcess, user: tuple[str, str, str], device: str, entries: list[dict[str, Any]]) -> Any:
    records = [{"entity_type": "logbook_entry", "data": e} for e in entries]
    response = httpx.post(f"{server.base_url}/v1/recovery/uploads", headers=_bearer(user),
                          json={"device_id": device, "records": records}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _seed(server: ServerProcess) -> None:
    entries = load_fixture(EXPORT)["logbook"]
    # Ada: everything from her laptop, declared complete; then her phone sends an edit of one entry, which
    # wins, so the laptop's version is archived and waits for review. The phone declares one entry too many.
    _upload(server, ADA, DEVICE, entries)
    done = httpx.post(f"{server.base_url}/v1/recovery/devices/{DEVICE}/complete", headers=_bearer(ADA),
                      json={"expected": {"logbook_entry": len(entries)}}, timeout=30)
    assert done.status_code == 200, done.text
    edited = copy.deepcopy(entries[3])
    edited["notes"] = "edited on the phone"
    edited["duration"] = 45
    edited["updatedAt"] = "2025-07-01T09:00:00.000Z"
    _upload(server, ADA, PHONE, [edited])
    mismatch = httpx.post(f"{server.base_url}/v1/recovery/devices/{PHONE}/complete", headers=_bearer(ADA),
                          json={"expected": {"logbook_entry": 2}}, timeout=30)
    assert mismatch.status_code == 409, mismatch.text
    # Carla: not a user yet, so her three entries are quarantined (unknown user).
    carla = [dict(e, id=f"Carla0000000000000-000{i}") for i, e in enumerate(entries[:3])]
    answer = _upload(server, CARLA, DEVICE, carla)
    assert answer["counts"]["quarantined"] == 3


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with live_server(tmp_path_factory.mktemp("page") / "app.db") as running:
        add_users(running.db_path, ADA, BEN, ADMIN)
        _seed(running)
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots"))


def sign_in(page: Any, server: ServerProcess, user: tuple[str, str, str] = ADMIN) -> None:
    page.goto(f"{server.base_url}/support/")
    assert page.url.endswith("/support/sign-in")  # not signed in: the form
    page.get_by_label("Admin token").fill(token_for(user))
    page.get_by_role("button", name="Sign in").click()


def test_an_admin_signs_in_sees_the_overview_and_signs_out(page: Any, server: ServerProcess, shots: Path) -> None:
    page.goto(f"{server.base_url}/support/sign-in")
    page.screenshot(path=str(shots / "sign-in.png"))
    sign_in(page, server)
    expect = playwright_api.expect
    expect(page.get_by_role("heading", level=1)).to_have_text("Recovery overview")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator('[data-state="needs_review"]')).to_have_text("1")  # Ada (a conflict)
    expect(page.locator('[data-state="quarantine_owners"]')).to_have_text("1")  # Carla
    cookie = next(c for c in page.context.cookies() if c["name"] == "support-session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/support"
    page.screenshot(path=str(shots / "overview.png"), full_page=True)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.goto(f"{server.base_url}/support/users")
    assert page.url.endswith("/support/sign-in")


def test_a_non_admin_gets_the_403_page_and_no_data(page: Any, server: ServerProcess) -> None:
    sign_in(page, server, ADA)
    expect = playwright_api.expect
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    assert "carla" not in page.content().lower()
    # The app's own cookie of a non-admin gets the same answer on every page, and no session is kept.
    page.context.add_cookies([{"name": "auth-token", "value": token_for(BEN), "url": server.base_url}])
    for path in ("/support/", f"/support/users/{ADA[0]}", "/support/users?q=a"):
        response = page.goto(f"{server.base_url}{path}")
        assert response.status == 403
        expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
        assert "ada.pianist" not in page.content()
    assert not [c for c in page.context.cookies() if c["name"] == "support-session"]


def test_find_a_user_by_part_of_the_email_and_open_their_page(page: Any, server: ServerProcess, shots: Path) -> None:
    sign_in(page, server)
    expect = playwright_api.expect
    page.get_by_role("link", name="Find a user").click()
    page.get_by_label("Email (any part) or user id").fill("PIANIST")
    page.get_by_role("button", name="Search").click()
    rows = page.get_by_test_id("user-list").locator("tbody tr")
    expect(rows).to_have_count(1)
    page.screenshot(path=str(shots / "find-a-user.png"), full_page=True)
    page.get_by_label("Email (any part) or user id").fill("")
    page.get_by_label("State").select_option("needs_review")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    # by id, exactly
    page.get_by_label("State").select_option("")
    page.get_by_label("Email (any part) or user id").fill(ADA[0])
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=ADA[1]).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(ADA[1])
    expect(page.get_by_test_id("user-state")).to_have_text("Needs review")
    devices = page.get_by_test_id("device")
    expect(devices).to_have_count(2)
    expect(devices.nth(0)).to_contain_text("Declared complete")
    expect(devices.nth(0)).to_contain_text("counts matched")
    expect(devices.nth(1)).to_contain_text("did not match")
    expect(devices.nth(1).locator("td")).to_have_text(["2", "1"])  # device said 2, received 1
    expect(page.get_by_test_id("timeline").locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("timeline")).to_contain_text("Recovery upload")
    page.screenshot(path=str(shots / "user.png"), full_page=True)


def test_redrive_a_quarantined_record_and_see_it_land(page: Any, server: ServerProcess, shots: Path) -> None:
    add_users(server.db_path, CARLA)  # the cause is fixed: her account exists again
    sign_in(page, server)
    expect = playwright_api.expect
    page.goto(f"{server.base_url}/support/users/{CARLA[0]}")
    items = page.get_by_test_id("quarantined")
    expect(items).to_have_count(3)
    expect(items.first).to_contain_text("The account it belongs to does not exist")
    items.first.get_by_text("Raw record as received").click()
    expect(items.first.locator("pre")).to_contain_text("Carla0000000000000-0000")
    page.screenshot(path=str(shots / "quarantine.png"), full_page=True)
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.get_by_test_id("redrive").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("3 went in")
    assert dialogs and "Re-drive 3" in dialogs[0]
    expect(page.get_by_test_id("quarantined")).to_have_count(0)
    expect(page.get_by_role("heading", name=re.compile(r"Quarantined records \(0 waiting\)"))).to_be_visible()
    rows = query(server.db_path, "SELECT COUNT(*) AS n FROM sync_data WHERE user_id = ? AND deleted_at IS NULL",
                 (CARLA[0],))
    assert rows[0]["n"] == 3


def test_review_a_conflict_side_by_side(page: Any, server: ServerProcess, shots: Path) -> None:
    sign_in(page, server)
    expect = playwright_api.expect
    page.goto(f"{server.base_url}/support/users/{ADA[0]}")
    conflict = page.get_by_test_id("conflict")
    expect(conflict).to_have_count(1)
    changed = conflict.locator("tr.differs th")
    expect(changed).to_have_text([re.compile(r"^updatedAt"), re.compile(r"^updated_at"), re.compile(r"^duration"),
                                  re.compile(r"^notes")])
    expect(conflict.locator("tr.differs", has_text="notes").locator("td").first).to_have_text("edited on the phone")
    conflict.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "conflict.png"), full_page=True)
    page.get_by_test_id("review").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("Marked 1 conflict(s) reviewed")
    expect(page.get_by_test_id("conflict")).to_have_count(0)
    expect(page.get_by_test_id("user-state")).to_have_text("In progress")  # the phone's declaration mismatched
    rows = query(server.db_path, "SELECT COUNT(*) AS n FROM recovery_archive WHERE user_id = ?", (ADA[0],))
    assert rows[0]["n"] == 1  # kept, only marked


def test_the_overview_changes_while_uploads_arrive(page: Any, server: ServerProcess) -> None:
    sign_in(page, server)
    expect = playwright_api.expect
    recovered = page.locator('[data-figure="recovered"]')
    before = int(recovered.inner_text())
    page.evaluate("window.notReloaded = true")
    entries = load_fixture(EXPORT)["logbook"]

    def pushes() -> None:  # a burst spread over a few seconds, each batch new sessions
        for i in range(10):
            batch = [dict(e, id=f"Burst{i:02d}00000000000-{j:04d}", notes=f"burst {i} {j}")
                     for j, e in enumerate(entries)]
            _upload(server, BEN, PHONE, batch)
            time.sleep(0.4)

    pusher = threading.Thread(target=pushes)
    pusher.start()
    try:
        expect(recovered).not_to_have_text(str(before), timeout=20_000)
        assert pusher.is_alive()  # changed while the burst still runs
        expect(page.locator('svg[data-series="uploads"] rect').last).to_be_attached()
    finally:
        pusher.join()
    expect(recovered).to_have_text(str(before + 10 * len(entries)), timeout=20_000)
    assert page.evaluate("window.notReloaded") is True  # htmx swapped the figures in; the page stayed


def test_a_phone_sized_screen_reads_the_pages(browser: Any, server: ServerProcess, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    try:
        page = context.new_page()
        sign_in(page, server)
        playwright_api.expect(page.get_by_role("heading", level=1)).to_have_text("Recovery overview")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing wider than the screen: tables scroll inside their own box
        page.screenshot(path=str(shots / "overview-phone.png"), full_page=True)
        page.goto(f"{server.base_url}/support/users/{ADA[0]}")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.screenshot(path=str(shots / "user-phone.png"))
    finally:
        context.close()


def test_keyboard_alone_reaches_the_search(page: Any, server: ServerProcess) -> None:
    sign_in(page, server)
    page.goto(f"{server.base_url}/support/users")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "q":
            break
    assert page.evaluate("document.activeElement.id") == "q"
    page.keyboard.type("ben.g")
    page.keyboard.press("Enter")
    playwright_api.expect(page.get_by_role("link", name=BEN[1])).to_be_visible()
