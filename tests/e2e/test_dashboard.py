"""The dashboard (``web/``) under the local runtime, in a real headless Chromium, on the demo world: a
listener with a few years of history (their download imported, the plays a sync read), and two
more listeners of the fake Spotify (``ana`` imports and signs out everywhere, ``mika`` starts
empty and deletes their account). One runtime and one browser serve every test of the module; the
tests run in file order, the ones that end sessions last."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.fakespotify import FakeSpotify
from devtools.synthetic import write_extended_zip
from tests.e2e.conftest import print_log_on_failure, runtime_with, sign_in
from tests.e2e.dashboard_world import (
    Listener,
    Tab,
    axe_available,
    axe_violations,
    launch_browser,
    open_tab,
    seed_demo_listener,
    upload_file,
    wait_for_import,
)
from tests.fixtures.local_runtime import LocalRuntime

pytestmark = pytest.mark.browser
log_on_failure = pytest.fixture(autouse=True)(print_log_on_failure)
SCREENSHOTS = os.environ.get("MYI_SCREENSHOTS_DIR")  # e.g. docs/screenshots: write them there
EXPORTS_ABSENT = "POST /me/exports answered 404: exports not in this build"


@pytest.fixture(scope="module")
def runtime(fake: FakeSpotify, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    """The runtime as ``make local`` runs it: the dashboard and the API on one origin (no
    ``APP_URL``), so sign-in comes back to the page."""
    with runtime_with(fake, tmp_path_factory) as rt:
        yield rt


@pytest.fixture(scope="module")
def demo(runtime: LocalRuntime, fake: FakeSpotify, tmp_path_factory: pytest.TempPathFactory) -> Listener:
    return seed_demo_listener(runtime, fake, tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def ana(runtime: LocalRuntime) -> Listener:
    return Listener("ana", sign_in(runtime, "ana")[0])


@pytest.fixture(scope="module")
def mika(runtime: LocalRuntime) -> Listener:
    return Listener("mika", sign_in(runtime, "mika")[0])


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def tabs(browser: Any) -> Iterator[list[Tab]]:
    """Tabs opened by a test, closed after it."""
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.close()


def tab_for(
    tabs: list[Tab], browser: Any, rt: LocalRuntime, who: Listener | None, path: str = "/", **kw: Any
) -> Tab:
    kw.setdefault("timezone", "UTC")
    if who is None:
        kw.setdefault("wait_for", "sign-in")
    tab = open_tab(browser, rt, who.cookie if who else None, path=path, **kw)
    tabs.append(tab)
    return tab


def api(rt: LocalRuntime, who: Listener, path: str, **params: Any) -> Any:
    with who.client(rt) as client:
        answer = client.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()


def exports_absent(rt: LocalRuntime) -> bool:
    return httpx.get(f"{rt.url}/me/exports").status_code == 404  # a route answers 401 signed out


def app_errors(rt: LocalRuntime, tab: Tab) -> list[str]:
    """The console's errors, less the 404 of GET /me/exports while this build has no exports."""
    absent = exports_absent(rt)
    return [e for e in tab.errors if not (absent and "/me/exports" in e)]


def counted(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def heatmap(page: Any) -> list[int]:
    return [
        int(x)
        for x in page.locator("#heatmap td.cell").evaluate_all("cells => cells.map(c => c.dataset.plays)")
    ]


def wait_until(check: Any, timeout_s: float = 15, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# ---- serving --------------------------------------------------------------------------------------


def test_the_dashboard_is_served_at_the_root_and_nothing_outside_it(runtime: LocalRuntime) -> None:
    page = httpx.get(f"{runtime.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Sign in with Spotify" in page.text and 'src="app.js"' in page.text
    script = httpx.get(f"{runtime.url}/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/missing.js", "/web/app.js"):
        answer = httpx.get(f"{runtime.url}{path}")
        assert answer.status_code == 404, path
    assert httpx.get(f"{runtime.url}/health").json() == {"status": "ok"}
    # A view's URL is the page too (a reload or a shared link).
    assert 'id="view-year"' in httpx.get(f"{runtime.url}/?view=year&year=2024").text


# ---- signing in, the first figures ----------------------------------------------------------------


def test_a_person_signs_in_with_spotify_and_lands_on_the_view_they_asked_for(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    year = demo.facts["years"][1]
    tab = tab_for(tabs, browser, runtime, None, f"/?view=year&year={year}")
    page = tab.page
    # Login -> the fake Spotify approves its first listener (demo) at once -> callback -> back here.
    page.get_by_test_id("sign-in").click()
    page.wait_for_url(f"{runtime.url}/?view=year&year={year}")
    tab.errors.clear()  # signed out, GET /me answered 401 as it should
    page.get_by_test_id("user-name").filter(has_text="Demo Listener").wait_for()
    page.get_by_test_id("year-review").get_by_text(f"Your {year} in music").wait_for()
    page.get_by_role("link", name="Dashboard").click()
    page.wait_for_url(f"{runtime.url}/")
    page.locator("#t-plays").filter(has_text=re.compile(r"\d")).wait_for()
    assert int(page.locator("#t-plays").inner_text().replace(",", "")) == demo.facts["plays"]
    page.get_by_test_id("top-tracks-item").nth(9).wait_for()
    assert page.get_by_test_id("top-tracks-item").count() == 10
    assert page.get_by_test_id("empty-state").is_hidden()
    assert tab.errors == []


def test_the_zone_offer_and_the_zone_settings_change_the_heatmap(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    assert api(runtime, demo, "/me")["timezone"] == "UTC"
    tab = tab_for(tabs, browser, runtime, demo, timezone="Asia/Tokyo")
    page = tab.page
    offer = page.get_by_test_id("zone-offer")
    offer.wait_for()
    assert "Asia/Tokyo" in offer.inner_text() and "UTC" in offer.inner_text()
    assert page.get_by_test_id("zone").inner_text().strip().endswith("UTC")
    page.locator("#heatmap td.cell").first.wait_for()
    before = heatmap(page)
    offer.get_by_role("button", name="Use Asia/Tokyo").click()
    page.get_by_test_id("zone").filter(has_text="Asia/Tokyo").wait_for()
    after = wait_until(lambda: (h := heatmap(page)) != before and h, what="the heatmap in Asia/Tokyo")
    assert sum(after) == sum(before)  # the same plays, nine hours later in the day
    assert offer.is_hidden()
    assert api(runtime, demo, "/me")["timezone"] == "Asia/Tokyo"
    assert api(runtime, demo, "/me/stats/activity")["heatmap"] == [
        after[d * 24 : d * 24 + 24] for d in range(7)
    ]

    # The settings panel: any zone, from the header.
    page.get_by_test_id("zone").click()
    dialog = page.get_by_role("dialog", name="Time zone")
    dialog.wait_for()
    page.get_by_test_id("zone-select").select_option("UTC")
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")
    page.get_by_test_id("zone").filter(has_text="UTC").wait_for()
    wait_until(lambda: heatmap(page) == before, what="the heatmap back in UTC")
    # Back in UTC, the offer comes back; kept, it stays away after a reload.
    offer.wait_for()
    offer.get_by_role("button", name="Keep it").click()
    assert offer.is_hidden()
    page.reload()
    page.get_by_test_id("user-name").wait_for()
    page.locator("#heatmap td.cell").first.wait_for()
    assert offer.is_hidden()
    assert tab.errors == []


def test_a_range_lives_in_the_url_survives_a_reload_and_back_and_forward_work(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, demo)
    page = tab.page
    timeline_title = page.locator("#timeline-title")
    page.locator("#timeline svg").wait_for()
    assert timeline_title.inner_text() == "Plays per month"  # all time: years of history

    page.get_by_role("button", name="4 weeks").click()
    page.wait_for_url(f"{runtime.url}/?range=4w")
    assert page.get_by_role("button", name="4 weeks").get_attribute("aria-pressed") == "true"
    four = api(runtime, demo, "/me/stats/overview", range="4w")
    page.locator("#t-plays").filter(has_text=f"{four['plays']:,}").wait_for()
    page.locator("#timeline-title").filter(has_text="per day").wait_for()
    assert page.locator("#timeline rect.bar").count() in (28, 29)

    # A custom window: in the URL, on the page, and the same after a reload.
    year = demo.facts["years"][1]
    first, last = f"{year}-02-01", f"{year}-06-30"
    page.locator("#from").fill(first)
    page.locator("#to").fill(last)
    page.get_by_test_id("custom-range").get_by_role("button", name="Show").click()
    page.wait_for_url(f"{runtime.url}/?from={first}&to={last}")
    custom = api(runtime, demo, "/me/stats/overview", **{"from": first, "to": last})
    plays = page.locator("#t-plays")
    plays.filter(has_text=f"{custom['plays']:,}").wait_for()
    assert custom["plays"] > 0
    timeline_title.filter(has_text="per week").wait_for()
    label = page.get_by_test_id("window-label").inner_text()
    assert "Feb" in label and "Jun" in label and str(year) in label
    page.reload()
    plays.filter(has_text=f"{custom['plays']:,}").wait_for()
    assert page.url == f"{runtime.url}/?from={first}&to={last}"
    assert page.locator("#from").input_value() == first and page.locator("#to").input_value() == last
    assert page.get_by_test_id("window-label").inner_text() == label
    assert all(b.get_attribute("aria-pressed") == "false" for b in page.locator(".windows button").all())

    # A year from the picker: every year with plays is offered.
    offered = page.get_by_test_id("year-pick").locator("option").evaluate_all("os => os.map(o => o.value)")
    assert [int(y) for y in offered if y] == demo.facts["years"]
    page.get_by_test_id("year-pick").select_option(str(year))
    page.wait_for_url(f"{runtime.url}/?year={year}")
    whole = api(runtime, demo, "/me/stats/overview", **{"from": f"{year}-01-01", "to": f"{year}-12-31"})
    plays.filter(has_text=f"{whole['plays']:,}").wait_for()

    page.go_back()
    page.wait_for_url(f"{runtime.url}/?from={first}&to={last}")
    plays.filter(has_text=f"{custom['plays']:,}").wait_for()
    page.go_back()
    page.wait_for_url(f"{runtime.url}/?range=4w")
    plays.filter(has_text=f"{four['plays']:,}").wait_for()
    assert page.get_by_role("button", name="4 weeks").get_attribute("aria-pressed") == "true"
    page.go_forward()
    page.wait_for_url(f"{runtime.url}/?from={first}&to={last}")
    plays.filter(has_text=f"{custom['plays']:,}").wait_for()
    assert tab.errors == []


def test_the_charts_give_exact_figures_by_plays_or_by_time(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, demo, "/?range=1y")
    page = tab.page
    activity = api(runtime, demo, "/me/stats/activity", range="1y")
    page.locator("#heatmap td.cell").first.wait_for()
    weekdays = page.get_by_test_id("weekday-total")
    hours = page.get_by_test_id("hour-total")
    assert weekdays.count() == 7 and hours.count() == 24
    monday = activity["weekdays"][0]
    assert weekdays.first.get_attribute("title").startswith(f"Mondays: {monday['plays']:,} play")
    assert weekdays.first.inner_text().strip() == f"{monday['plays']:,}"
    nine = activity["hours"][9]
    assert hours.nth(9).get_attribute("title").startswith(f"09:00\u201310:00: {nine['plays']:,} play")
    cells = heatmap(page)
    assert [cells[d * 24 : d * 24 + 24] for d in range(7)] == activity["heatmap"]
    # The timeline: a tooltip under the pointer, and under the arrow keys.
    bars = page.locator("#timeline rect.bar")
    assert bars.count() >= 52
    assert re.search(r"\d+ plays? · ", bars.first.locator("title").text_content() or "")
    bars.nth(10).hover()
    tip = page.locator("#tip")
    tip.wait_for()
    assert re.match(r"Week of .+: [\d,]+ plays? · ", tip.inner_text())
    page.locator("#timeline svg").focus()
    page.keyboard.press("End")
    assert tip.is_visible() and page.locator("#chart-live").inner_text() == tip.inner_text()
    # By time.
    page.get_by_role("button", name="Time", exact=True).click()
    page.locator("#timeline-title").filter(has_text="Listening time per week").wait_for()
    assert weekdays.first.inner_text().strip().endswith(" h")
    assert "Listening time" in (page.locator("#timeline svg").get_attribute("aria-label") or "")
    assert tab.errors == []


def test_top_lists_rank_by_plays_or_time_page_on_and_open_in_spotify(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, demo)
    page = tab.page
    for kind in ("tracks", "artists", "albums"):
        page.locator(".tabs").get_by_role("button", name=kind.capitalize()).click()
        items = page.get_by_test_id(f"top-{kind}-item")
        items.nth(9).wait_for()
        expected = api(runtime, demo, f"/me/stats/top/{kind}", limit=20)["items"]
        first = items.first
        assert first.locator(".name").inner_text().startswith(expected[0]["name"])
        link = first.locator("a.name")
        assert (
            link.get_attribute("href") == f"https://open.spotify.com/{kind[:-1]}/{expected[0]['spotify_id']}"
        )
        assert link.get_attribute("target") == "_blank"
        cover = first.locator(".cover")
        if expected[0]["image_url"]:
            assert cover.get_attribute("src") == expected[0]["image_url"]
        more = page.get_by_test_id("top-more")
        if len(expected) > 10:
            more.click()
            items.nth(10).wait_for()
        else:
            assert more.is_hidden()
        ranks = [int(r) for r in page.locator("#top .rank").all_inner_texts()]
        assert ranks == list(range(1, len(expected) + 1))
    page.get_by_test_id("top-by").select_option("ms_played")
    by_time = api(runtime, demo, "/me/stats/top/albums", by="ms_played", limit=10)["items"]
    page.get_by_test_id("top-albums-item").first.filter(has_text=by_time[0]["name"]).wait_for()
    assert "h" in page.get_by_test_id("top-albums-item").first.locator(".figure > span").first.inner_text()
    assert tab.errors == []

    # Covers that cannot be loaded leave a placeholder, never a broken image.
    bare = tab_for(tabs, browser, runtime, demo, covers=False)
    bare.page.get_by_test_id("top-tracks-item").nth(9).wait_for()
    wait_until(
        lambda: bare.page.locator("#top .placeholder").count() == 10,
        what="placeholders for covers that failed",
    )
    assert bare.page.locator("#top img").count() == 0


def test_history_scrolls_on_grouped_by_day_with_estimates_marked(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, demo)
    page = tab.page
    box = page.get_by_test_id("history")
    items = page.get_by_test_id("history-item")
    items.nth(49).wait_for()
    first_count = items.count()
    assert first_count in (50, 100)  # a box not yet full reads on at once
    newest = api(runtime, demo, "/me/history", limit=1)["items"][0]
    assert items.first.locator("time").get_attribute("datetime") == newest["played_at"]
    # Infinite scroll: the bottom of the box reads the next page.
    for _ in range(3):
        shown = items.count()
        box.evaluate("b => b.scrollTo(0, b.scrollHeight)")
        wait_until(lambda shown=shown: items.count() > shown, what="the next page of history")
    assert items.count() >= first_count + 150
    # Grouped by day (the account's zone is UTC): each play under its own day's heading.
    days = page.locator("#history section.day")
    dates = days.evaluate_all("ds => ds.map(d => d.dataset.date)")
    assert dates == sorted(dates, reverse=True) and len(set(dates)) == len(dates)
    for day in days.all()[:5]:
        date = day.get_attribute("data-date")
        stamps = day.locator("time").evaluate_all("ts => ts.map(t => t.getAttribute('datetime'))")
        assert stamps and all(s.startswith(date) for s in stamps)
    assert page.get_by_test_id("history-day").first.inner_text() in ("Today", "Yesterday")
    # The plays a sync read are estimates until a download confirms them: marked, and explained.
    estimated = page.locator("[data-testid=history-item][data-estimated=true]")
    assert estimated.count() >= 1
    assert "Estimated" in (estimated.first.locator(".length").get_attribute("title") or "")
    assert page.locator("#estimate-legend").is_visible()
    imported = page.locator("[data-testid=history-item]:not([data-estimated])")
    assert imported.count() >= 1 and imported.first.locator(".estimate").count() == 0
    assert tab.errors == []


def test_the_year_in_review_and_its_image(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab], tmp_path: Path
) -> None:
    latest, earlier = demo.facts["years"][0], demo.facts["years"][1]
    tab = tab_for(tabs, browser, runtime, demo)
    page = tab.page
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Year in review").click()
    page.wait_for_url(f"{runtime.url}/?view=year")
    review = page.get_by_test_id("year-review")
    review.get_by_text(f"Your {latest} in music").wait_for()
    window = {"from": f"{latest}-01-01", "to": f"{latest}-12-31"}
    overview = api(runtime, demo, "/me/stats/overview", **window)
    page.get_by_test_id("year-plays").filter(has_text=f"{overview['plays']:,}").wait_for()
    hours = overview["ms_played"] / 3_600_000
    assert float(page.get_by_test_id("year-hours").inner_text().replace(",", "")) == pytest.approx(
        hours, abs=0.51
    )
    for kind in ("tracks", "artists", "albums"):
        top = api(runtime, demo, f"/me/stats/top/{kind}", limit=5, **window)["items"]
        listed = page.get_by_test_id(f"year-{kind}-item")
        assert listed.count() == 5
        assert listed.first.locator(".name").inner_text().startswith(top[0]["name"])
    activity = api(runtime, demo, "/me/stats/activity", **window)
    best_hour = max(range(24), key=lambda h: (activity["hours"][h]["plays"], -h))
    assert page.get_by_test_id("year-hour").inner_text().startswith(f"{best_hour:02d}:00")
    best_day = max(range(7), key=lambda d: (activity["weekdays"][d]["plays"], -d))
    days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    assert page.get_by_test_id("year-weekday").inner_text().startswith(days[best_day])
    months = [0] * 12
    for d in overview["days"]:
        months[int(d["date"][5:7]) - 1] += d["plays"]
    month_names = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                   "October", "November", "December"]  # fmt: skip
    assert page.get_by_test_id("year-month").inner_text().startswith(month_names[months.index(max(months))])
    # The last play of the latest year is the newest play of all.
    newest = api(runtime, demo, "/me/history", limit=1)["items"][0]
    page.get_by_test_id("year-last").filter(has_text=newest["track"]["name"]).wait_for()
    page.get_by_test_id("year-first").filter(has_text=re.compile(r"\w")).filter(has_not_text="…").wait_for()

    # Save as image: a PNG drawn in the browser.
    with page.expect_download() as download:
        page.get_by_test_id("year-save").click()
    saved = tmp_path / "year.png"
    download.value.save_as(saved)
    assert download.value.suggested_filename == f"myi-{latest}.png"
    assert png_size(saved.read_bytes()) == (1080, 1350) and saved.stat().st_size > 20_000
    src = page.get_by_test_id("year-image").get_attribute("src") or ""
    assert src.startswith("data:image/png;base64,") and len(src) > 25_000
    assert base64.b64decode(src.split(",", 1)[1]) == saved.read_bytes()
    colours = page.evaluate(
        """async (src) => {
            const img = new Image(); img.src = src; await img.decode();
            const c = document.createElement('canvas'); c.width = 108; c.height = 135;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0, 108, 135);
            const d = g.getImageData(0, 0, 108, 135).data; const seen = new Set();
            for (let i = 0; i < d.length; i += 4) {
              seen.add((d[i] >> 4) + ',' + (d[i + 1] >> 4) + ',' + (d[i + 2] >> 4));
            }
            return seen.size;
        }""",
        src,
    )
    assert colours > 20  # text and colour, not a blank canvas

    # Another year: from the picker, in the URL, and the same after a reload.
    page.get_by_test_id("year-select").select_option(str(earlier))
    page.wait_for_url(f"{runtime.url}/?view=year&year={earlier}")
    review.get_by_text(f"Your {earlier} in music").wait_for()
    earlier_plays = api(
        runtime, demo, "/me/stats/overview", **{"from": f"{earlier}-01-01", "to": f"{earlier}-12-31"}
    )["plays"]
    page.get_by_test_id("year-plays").filter(has_text=f"{earlier_plays:,}").wait_for()
    page.reload()
    page.get_by_test_id("year-plays").filter(has_text=f"{earlier_plays:,}").wait_for()
    page.get_by_test_id("year-first").filter(has_text=re.compile(r"\d")).wait_for()
    assert tab.errors == []


# ---- imports --------------------------------------------------------------------------------------


def test_an_import_running_when_the_page_loads_is_followed_and_a_dropped_file_is_followed_to_done(
    runtime: LocalRuntime, browser: Any, ana: Listener, tabs: list[Tab], tmp_path: Path
) -> None:
    first = tmp_path / "my_spotify_data.zip"
    write_extended_zip(first, 300, seed=4)
    with ana.client(runtime) as client:
        created = client.post(
            "/me/imports", json={"filename": first.name, "size_bytes": first.stat().st_size}
        )
        assert created.status_code == 201, created.text
    # Started elsewhere (another tab, another device): followed from the moment the page loads.
    tab = tab_for(tabs, browser, runtime, ana, "/?view=imports")
    page = tab.page
    status = page.get_by_test_id("import-status")
    status.filter(has_text="waiting for its upload").wait_for()
    upload_file(created.json()["upload"], first)
    status.filter(has_text="Done").wait_for(timeout=60_000)
    with ana.client(runtime) as client:
        done = wait_for_import(client, created.json()["import"]["id"])
    assert f"{done['counts']['added']:,} plays added" in status.inner_text()
    item = page.get_by_test_id("import-item").first
    item.filter(has_text="done").wait_for()
    text = item.inner_text()
    assert f"{done['counts']['added']:,} plays added" in text
    skipped = done["counts"]["skipped"]
    assert "Not counted: " in text
    if skipped["short_play"]:
        n = skipped["short_play"]
        assert (
            counted(n, "short play (under 30 s and skipped)", "short plays (under 30 s and skipped)") in text
        )
    if skipped["episode"]:
        assert counted(skipped["episode"], "podcast or video episode", "podcast or video episodes") in text

    # Dropped on the page: the upload's progress, then the import's, to done.
    second = tmp_path / "second.zip"
    write_extended_zip(second, 400, seed=9)
    transfer = page.evaluate_handle(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: 'application/zip'}));
            return dt;
        }""",
        [second.name, base64.b64encode(second.read_bytes()).decode()],
    )
    seen: list[str] = []
    page.expose_function("myiSaw", lambda text: seen.append(text))
    page.evaluate(
        """() => {
            const text = document.getElementById('progress-text');
            new MutationObserver(() => window.myiSaw(text.textContent))
              .observe(text, {childList: true, characterData: true, subtree: true});
        }"""
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    status.filter(has_text="Done").wait_for(timeout=60_000)
    assert any(s.startswith("Uploading second.zip") for s in seen), seen
    assert any("%" in s and s.startswith("Uploading") for s in seen)
    wait_until(
        lambda: page.get_by_test_id("import-item").filter(has_text="done").count() == 2, what="two imports"
    )
    assert page.get_by_test_id("import-item").first.locator(".file").inner_text() == "second.zip"

    # Picked with the file chooser: a bare JSON file of the download.
    bare = tmp_path / "Streaming_History_Audio_2024.json"
    with zipfile.ZipFile(second) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".json"))
        bare.write_bytes(zf.read(name))
    page.set_input_files("#file", str(bare))
    status.filter(has_text=re.compile(r"Done: 0 plays added, 0 made exact, [\d,]+ already there")).wait_for(
        timeout=60_000
    )
    wait_until(
        lambda: page.get_by_test_id("import-item").filter(has_text="done").count() == 3, what="three imports"
    )
    assert page.locator("#imports-more").is_hidden()
    assert tab.errors == []


# ---- your data ------------------------------------------------------------------------------------


def test_export_my_history_then_download_it(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, demo, "/?view=account")
    page = tab.page
    page.locator("#export input[name=format][value=csv]").check()
    with page.expect_response(
        lambda r: r.url.endswith("/me/exports") and r.request.method == "POST"
    ) as answer:
        page.get_by_test_id("export-form").get_by_role("button", name="Export my history").click()
    if answer.value.status == 404:
        pytest.skip(EXPORTS_ABSENT)
    assert answer.value.status == 202, answer.value.text()
    link = page.get_by_test_id("export-download")
    link.wait_for(timeout=90_000)
    assert "Ready" in page.get_by_test_id("export-status").inner_text()
    href = link.get_attribute("href") or ""
    got = httpx.get(href, timeout=30)
    assert got.status_code == 200 and got.content[:2] == b"PK"
    assert tab.errors == []


def test_every_view_has_no_serious_or_critical_accessibility_violations(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    axe = axe_available()
    found: dict[str, Any] = {}
    for width in (1440, 375):
        tab = tab_for(tabs, browser, runtime, demo, width=width, height=900)
        page = tab.page
        views = {
            "dashboard": ("/", "#heatmap td.cell"),
            "year": (f"/?view=year&year={demo.facts['years'][0]}", "[data-testid=year-tracks-item]"),
            "imports": ("/?view=imports", "[data-testid=import-item]"),
            "account": ("/?view=account", "#delete-confirm"),
        }
        for view, (path, ready) in views.items():
            page.goto(f"{runtime.url}{path}")
            page.locator(ready).first.wait_for()
            page.wait_for_timeout(300)
            found[f"{view} at {width}"] = axe_violations(page, axe)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width, f"{view} is {wide} px wide at {width} px"
        page.get_by_role("button", name="Change the time zone").click()
        page.get_by_role("dialog", name="Time zone").wait_for()
        found[f"zone settings at {width}"] = axe_violations(page, axe)
    signed_out = tab_for(tabs, browser, runtime, None)
    found["signed out"] = axe_violations(signed_out.page, axe)
    assert {k: v for k, v in found.items() if v} == {}, json.dumps(found, indent=1)


def test_the_keyboard_reaches_everything_with_a_visible_focus(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, demo)
    page = tab.page
    page.locator("#heatmap td.cell").first.wait_for()
    focused: list[dict[str, Any]] = []
    for _ in range(30):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate(
                """() => { const e = document.activeElement; const s = getComputedStyle(e);
                    return {tag: e.tagName, text: (e.innerText || e.value || e.ariaLabel || '').slice(0, 30),
                            outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0}; }"""
            )
        )
    assert all(f["outline"] for f in focused), [f for f in focused if not f["outline"]]
    texts = [f["text"] for f in focused]
    assert texts[0] == "Skip to content"
    assert "4 weeks" in texts and "Year in review" in texts
    # Choose a window with the keyboard alone.
    page.get_by_role("button", name="6 months").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{runtime.url}/?range=6m")
    assert tab.errors == []


def test_screenshots_at_375_and_1440_and_nothing_wider_than_the_screen(
    runtime: LocalRuntime, browser: Any, demo: Listener, tabs: list[Tab], tmp_path: Path
) -> None:
    """The dashboard and a year at a phone's and a desktop's width: nothing wider than the screen.
    ``MYI_SCREENSHOTS_DIR=docs/screenshots`` keeps the pictures (the README shows them)."""
    out = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    year = demo.facts["years"][1]
    heights = {("dashboard", 1440): 1700, ("year", 1440): 1250, ("dashboard", 375): 1500, ("year", 375): 1300}
    for width in (1440, 375):
        tab = tab_for(tabs, browser, runtime, demo, width=width, height=812)
        page = tab.page
        for view, path, ready in (
            ("dashboard", "/", "[data-testid=history-item]"),
            ("year", f"/?view=year&year={year}", "[data-testid=year-albums-item]"),
        ):
            height = heights.get((view, width), 812)
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{runtime.url}{path}")
            page.locator(ready).first.wait_for()
            if view == "year":
                page.get_by_test_id("year-first").filter(has_not_text="…").wait_for()
            page.wait_for_timeout(400)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= width, f"{view} is {wide} px wide at {width} px"
            shot = out / f"{view}-{width}.png"
            page.screenshot(path=str(shot))
            assert png_size(shot.read_bytes()) == (width, height)
            assert shot.stat().st_size < 300_000, f"{shot.name}: {shot.stat().st_size} bytes"
        assert tab.errors == []


# ---- empty states and errors ----------------------------------------------------------------------


def test_a_listener_without_plays_is_told_what_to_do_and_api_errors_are_said_in_words(
    runtime: LocalRuntime, browser: Any, mika: Listener, tabs: list[Tab]
) -> None:
    assert api(runtime, mika, "/me")["totals"]["plays"] == 0
    tab = tab_for(tabs, browser, runtime, mika)
    page = tab.page
    empty = page.get_by_test_id("empty-state")
    empty.wait_for()
    assert "upload" in empty.inner_text().lower() and "first sync" in empty.inner_text()
    assert empty.get_by_role("link", name="Import").get_attribute("href") == "?view=imports"
    page.locator("#history-empty").wait_for()
    page.get_by_role("link", name="Year in review").click()
    page.locator("#year-empty").filter(has_text="No plays yet").wait_for()
    assert tab.errors == []

    # An error of the API, in its own words (with the wait it asks for).
    failing = tab_for(tabs, browser, runtime, mika, wait_for=None)
    failing.page.route(
        re.compile(r"/me/stats/overview\?"),
        lambda route: route.fulfill(
            status=429,
            headers={"retry-after": "7"},
            content_type="application/json",
            body=json.dumps({"error": {"code": "rate_limited", "message": "Too many requests just now."}}),
        ),
    )
    failing.page.goto(f"{runtime.url}/?range=4w")
    failing.page.locator("#message.error").filter(
        has_text="Too many requests just now. Try again in 7 s."
    ).wait_for()


# ---- sessions, the Spotify grant, leaving ---------------------------------------------------------


def test_sign_out_everywhere_ends_every_session(
    runtime: LocalRuntime, browser: Any, ana: Listener, tabs: list[Tab]
) -> None:
    other, _, _ = sign_in(runtime, "ana")  # another browser of theirs
    tab = tab_for(tabs, browser, runtime, ana, "/?view=account")
    page = tab.page
    page.get_by_test_id("logout-everywhere").click()
    page.get_by_test_id("sign-in").wait_for()
    assert "every device" in page.locator("#signed-out-note").inner_text()
    for cookie in (ana.cookie, other):
        assert httpx.get(f"{runtime.url}/me", cookies={"myi_session": cookie}).status_code == 401
    page.reload()
    page.get_by_test_id("sign-in").wait_for()


def test_the_header_says_when_spotify_was_last_read_and_offers_a_reconnect_when_access_lapsed(
    runtime: LocalRuntime, browser: Any, fake: FakeSpotify, demo: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, demo)
    page = tab.page
    status = page.get_by_test_id("sync-status")
    status.filter(has_text="Synced").wait_for()
    assert page.get_by_test_id("reconnect").is_hidden()
    assert page.get_by_test_id("sync-gaps").is_hidden()
    # Access revoked at Spotify: three rounds of the fan-out find it out.
    fake.revoke("demo")
    fake.expire_access_tokens()
    for _ in range(3):
        assert runtime.run_schedule("sync-fanout").status_code == 200
        runtime.drain(timeout_s=90)
    page.reload()
    reconnect = page.get_by_test_id("reconnect")
    reconnect.wait_for()
    assert "/auth/login?return_to=" in (reconnect.get_attribute("href") or "")
    assert "lapsed" in status.inner_text()


def test_deleting_the_account_asks_for_the_phrase_and_ends_signed_out(
    runtime: LocalRuntime, browser: Any, mika: Listener, tabs: list[Tab]
) -> None:
    tab = tab_for(tabs, browser, runtime, mika, "/?view=account")
    page = tab.page
    button = page.get_by_role("button", name="Delete my account")
    confirm = page.get_by_label("Type delete my account to confirm")
    assert button.is_disabled()
    confirm.fill("delete")
    assert button.is_disabled()
    confirm.fill("delete my account")
    assert button.is_enabled()
    button.click()
    page.get_by_test_id("sign-in").wait_for()
    assert "deleted" in page.locator("#signed-out-note").inner_text()
    assert page.url == f"{runtime.url}/"
    assert app_errors(runtime, tab) == []
    assert httpx.get(f"{runtime.url}/me", cookies={"myi_session": mika.cookie}).status_code == 401
    assert page.evaluate("fetch('/me', {credentials: 'include'}).then(r => r.status)") == 401
