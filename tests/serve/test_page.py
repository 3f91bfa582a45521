"""The page, used through a real headless browser (Debian's chromium driven by Playwright) on a
phone-sized screen, in English and French."""

from __future__ import annotations

import os
import shutil

from .support import photo_of


def csp_refusals(page) -> list[str]:
    """What the browser refuses under the page's Content-Security-Policy (chromium says so on the console)."""
    refused: list[str] = []
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    return refused


def test_page_on_a_phone_identifies_a_photo_shows_information_and_similar_images(browser, server, tmp_path):
    page = browser.new_page(
        viewport={"width": 390, "height": 844}, device_scale_factor=1, is_mobile=True, has_touch=True
    )
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    refused = csp_refusals(page)
    response = page.goto(server.url + "/")
    assert "script-src 'self'" in response.headers["content-security-policy"]  # the page runs under its CSP
    assert page.locator("#camera").get_attribute("capture") == "environment"
    assert page.locator("#camera").get_attribute("accept") == "image/*"
    photo = photo_of("Banana", 1)
    page.set_input_files("#choose", str(photo))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    verdict = page.inner_text("#verdict")
    assert verdict in ("Banana", "Not sure")
    if verdict == "Not sure":
        assert "Banana" in page.inner_text("#confidence")
    else:
        assert "Confidence" in page.inner_text("#confidence")
    assert page.locator("#top5 li").count() == 5
    info = page.inner_text("#info")
    assert "Type" in info and "Fruit" in info
    page.wait_for_function(
        "() => [...document.querySelectorAll('#similar img')].length === 8 && "
        "[...document.querySelectorAll('#similar img')].every(i => i.complete && i.naturalWidth > 0)",
        timeout=30_000,
    )
    assert "Banana" in page.inner_text("#similar")
    assert "Mihai Oltean" in page.inner_text("footer") and "CC BY-SA 4.0" in page.inner_text("footer")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling on a phone
    shot = tmp_path / "phone.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("FRUITLENS_SCREENSHOT"):  # on request (the README's: scripts/screenshots.py)
        shutil.copy(shot, os.environ["FRUITLENS_SCREENSHOT"])
    assert all(u.startswith(server.url) or u.startswith("blob:") for u in requests), (
        requests
    )  # nothing from the internet

    # a photo that is no fruit: "not sure", said plainly; then a file that is no image: the reason
    coffee = tmp_path / "coffee.png"
    from importlib import resources

    coffee.write_bytes((resources.files("skimage") / "data" / "coffee.png").read_bytes())
    page.set_input_files("#choose", str(coffee))
    page.wait_for_function("() => document.querySelector('#verdict').textContent === 'Not sure'", timeout=30_000)
    assert page.is_visible("#why")
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    page.set_input_files("#choose", str(text))
    page.wait_for_selector(".status.error", timeout=30_000)
    assert "not an image" in page.inner_text("#status")
    assert not refused, refused  # nothing the page does is blocked by its Content-Security-Policy
    page.close()


def test_page_in_french_with_several_photos_and_feedback_with_and_without_consent(browser, server, built, tmp_path):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, locale="fr-FR"
    )
    page = context.new_page()
    refused = csp_refusals(page)
    page.goto(server.url + "/")
    assert page.get_attribute("html", "lang") == "fr" and page.inner_text("label[for=camera]") == "Prendre une photo"
    page.set_input_files("#choose", str(photo_of("Kiwi", 0)))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.inner_text("#verdict") in ("Kiwi", "Pas sûr")
    assert "Taille" in page.inner_text("#info") or "Type" in page.inner_text("#info")
    assert "Mihai Oltean" in page.inner_text("footer")
    # a second photo of the same fruit: one answer from both
    page.set_input_files("#more", str(photo_of("Kiwi", 1)))
    page.wait_for_function(
        "() => document.querySelector('#combined') && !document.querySelector('#combined').hidden", timeout=30_000
    )
    assert page.locator("#thumbs li").count() == 2 and "2 photos" in page.inner_text("#combined")
    # the same answer in English, with the switch
    page.click("#lang-en")
    page.wait_for_function("() => document.documentElement.lang === 'en'", timeout=10_000)
    assert page.inner_text("label[for=camera]") == "Take a photo"
    page.wait_for_function(
        "() => ['Kiwi', 'Not sure'].includes(document.querySelector('#verdict').textContent)", timeout=30_000
    )
    store = built / "feedback"
    before = set(store.rglob("*.jpg")) if store.exists() else set()
    # feedback without consent: nothing kept
    page.fill("#said", "Kiwi")
    page.click("#feedback button[type=submit]")
    page.wait_for_function(
        "() => document.querySelector('#feedback-status').textContent.includes('Nothing was kept')", timeout=30_000
    )
    assert (set(store.rglob("*.jpg")) if store.exists() else set()) == before
    # with consent: kept, a receipt, and deleted from the page
    page.check("#consent")
    page.click("#feedback button[type=submit]")
    page.wait_for_selector("#delete", timeout=30_000)
    kept = set(store.rglob("*.jpg")) - before
    assert len(kept) == 2 and {p.parent.name for p in kept} == {"Kiwi"}  # both photos of the question
    page.click("#delete")
    page.wait_for_function(
        "() => document.querySelector('#feedback-status').textContent === 'Deleted.'", timeout=30_000
    )
    assert not any(p.exists() for p in kept)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert not refused, refused
    context.close()
