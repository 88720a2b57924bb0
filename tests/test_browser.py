"""The drawing page in a real headless Chromium, driven by Selenium.

Draws a "1" and a "7" on the canvas with pointer input (Selenium's W3C actions, which
Chromium turns into pointerdown/pointermove/pointerup events), and checks the digit the
page shows and that the 28x28 preview appears; then the number "17", written as a
person would, read as a number with each digit and its preview. Screenshots go to
pytest's tmp_path.

Needs Debian's ``chromium`` and ``chromium-driver`` (``apt-get install chromium
chromium-driver``) and the ``selenium`` package; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil

import pytest

selenium = pytest.importorskip("selenium", reason="selenium is not installed "
                                                  "(pip install 'mnist-xp[test]')")
pytest.importorskip("PIL", reason="Pillow is needed to decode the drawings")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException, WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from helpers_serve import running_server  # noqa: E402

TIMEOUT = 60  # seconds; a safety net against a hung browser, never asserted on


def _find(*names):
    for name in names:
        path = shutil.which(name) or (name if os.path.isfile(name) else None)
        if path:
            return path
    return None


CHROMIUM = _find(os.environ.get("CHROMIUM", ""), "chromium", "/usr/bin/chromium",
                 "chromium-browser")
CHROMEDRIVER = _find(os.environ.get("CHROMEDRIVER", ""), "chromedriver", "/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver "
           "(apt-get install chromium chromium-driver); not found on PATH")


@pytest.fixture(scope="module")
def url():
    with running_server() as srv:
        host, port = srv.server_address[:2]
        yield f"http://{host}:{port}/"


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, and nothing that reaches for the network (this machine has none).
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions",
                 "--window-size=1000,900", "--force-device-scale-factor=1",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    try:
        driver = webdriver.Chrome(options=options, service=service)
    except WebDriverException as exc:
        pytest.skip(f"chromium did not start: {str(exc).splitlines()[0]}")
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


def draw(driver, pad, strokes):
    """Draw `strokes` (lists of (x, y) in 0..1 of the pad) with pointer actions."""
    w, h = pad.size["width"], pad.size["height"]

    def offset(p):  # Selenium 4 offsets are from the element's centre
        return round((p[0] - 0.5) * w), round((p[1] - 0.5) * h)

    for stroke in strokes:
        chain = ActionChains(driver, duration=10)
        chain.move_to_element_with_offset(pad, *offset(stroke[0])).click_and_hold()
        for a, b in zip(stroke, stroke[1:]):
            # Several small moves per segment, as a hand makes: pointermove events.
            for t in (0.25, 0.5, 0.75, 1.0):
                p = (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)
                chain.move_to_element_with_offset(pad, *offset(p))
        chain.release().perform()


def shown_digit(driver, previous=None):
    """The digit (or number) the page shows once the answer to the whole drawing is in.

    The page answers as it is drawn on, so an answer about the first strokes can come
    first; it marks its answer section aria-busy until the newest drawing is answered.
    """
    def ready(d):
        text = d.find_element(By.ID, "digit").text.strip()
        seen = d.execute_script("return document.getElementById('seen').dataset.ready")
        busy = d.find_element(By.ID, "answer-section").get_attribute("aria-busy")
        return (text if text.isdigit() and seen == "1" and busy == "false"
                and text != previous else False)
    try:
        return WebDriverWait(driver, TIMEOUT).until(ready)
    except TimeoutException:
        status = driver.find_element(By.ID, "status").text
        pytest.fail(f"no prediction shown (status line: {status!r})")


def canvas_ink(driver, canvas) -> int:
    """How many pixels of a 28x28 preview canvas (a WebElement) are lit."""
    return driver.execute_script("""
        const d = arguments[0].getContext('2d').getImageData(0, 0, 28, 28).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 64) n++;
        return n;""", canvas)


def preview_ink(driver) -> int:
    """How many pixels of the big 28x28 preview are lit."""
    return canvas_ink(driver, driver.find_element(By.ID, "seen"))


def top_bar(driver) -> int:
    """The class whose probability bar is marked as the top one."""
    bars = driver.find_elements(By.CSS_SELECTOR, "#bars li")
    (top,) = [i for i, li in enumerate(bars) if "top" in li.get_attribute("class").split()]
    return top


ONE = [[(0.52, 0.18), (0.50, 0.50), (0.48, 0.84)]]
SEVEN = [[(0.22, 0.22), (0.50, 0.21), (0.78, 0.22), (0.64, 0.50), (0.50, 0.84)]]


def test_draw_one_then_seven(browser, url, tmp_path):
    browser.get(url)
    assert browser.title.startswith("mnist-xp")
    pad = browser.find_element(By.ID, "pad")
    assert pad.size["width"] == pad.size["height"] > 200

    draw(browser, pad, ONE)
    assert shown_digit(browser) == "1"
    assert preview_ink(browser) > 20
    browser.save_screenshot(str(tmp_path / "one.png"))

    clear = browser.find_element(By.ID, "clear")
    clear.click()
    assert browser.find_element(By.ID, "digit").text == "–"
    assert preview_ink(browser) == 0

    draw(browser, pad, SEVEN)
    assert shown_digit(browser) == "7"
    assert preview_ink(browser) > 20
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert len(bars) == 10 and "top" in bars[7].get_attribute("class")
    track = bars[7].find_element(By.CSS_SELECTOR, ".track").size["width"]

    def settled_fill(d):
        # the bar grows over a 0.15 s CSS transition: read its width once it stops
        widths = [bars[7].find_element(By.CSS_SELECTOR, ".fill").size["width"]
                  for _ in range(2)]
        return widths[0] if widths[0] == widths[1] and d.execute_script(
            "return document.getAnimations().length") == 0 else False
    fill = WebDriverWait(browser, TIMEOUT).until(settled_fill)
    assert fill > 0.5 * track  # the top bar is drawn, most of the way across
    path = tmp_path / "seven.png"
    browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("MNIST_XP_SCREENSHOT"):
        shutil.copyfile(path, os.environ["MNIST_XP_SCREENSHOT"])


# "17" as a person writes it on the pad: a 1 on the left, a 7 on the right, a clear gap.
ONE_SEVEN = [[(0.27, 0.24), (0.25, 0.50), (0.23, 0.78)],
             [(0.50, 0.27), (0.66, 0.26), (0.82, 0.27), (0.72, 0.52), (0.62, 0.78)]]


def test_draw_a_two_digit_number(browser, url, tmp_path):
    browser.get(url)
    pad = browser.find_element(By.ID, "pad")
    draw(browser, pad, ONE_SEVEN)
    assert shown_digit(browser) == "17"
    assert "sure of all 2 digits" in browser.find_element(By.ID, "confidence").text
    # Each digit, left to right, with its probability and the 28x28 image the model saw.
    digits = browser.find_elements(By.CSS_SELECTOR, "#digits li button")
    assert [b.find_element(By.CSS_SELECTOR, ".read").text for b in digits] == ["1", "7"]
    for b in digits:
        assert b.find_element(By.CSS_SELECTOR, ".value").text.endswith("%")
        assert canvas_ink(browser, b.find_element(By.TAG_NAME, "canvas")) > 20
    # The bars and the big preview follow the chosen digit: the first, then the second.
    assert digits[0].get_attribute("aria-pressed") == "true"
    assert top_bar(browser) == 1
    first = preview_ink(browser)
    digits[1].click()
    assert digits[1].get_attribute("aria-pressed") == "true"
    assert digits[0].get_attribute("aria-pressed") == "false"
    assert top_bar(browser) == 7
    assert "digit 2 of 2" in browser.find_element(By.ID, "seen-caption").text
    assert preview_ink(browser) > 20 and preview_ink(browser) != first
    browser.save_screenshot(str(tmp_path / "seventeen.png"))

    # Clear forgets the number; a single digit afterwards shows no list of digits.
    browser.find_element(By.ID, "clear").click()
    assert not browser.find_element(By.ID, "digits").is_displayed()
    draw(browser, pad, SEVEN)
    assert shown_digit(browser) == "7"
    assert not browser.find_element(By.ID, "digits").is_displayed()
    assert browser.find_element(By.ID, "seen-caption").text == "what the model sees (28×28)"


def test_keyboard_reaches_the_controls(browser, url):
    browser.get(url)
    body = browser.find_element(By.TAG_NAME, "body")
    body.click()
    reached = []
    for _ in range(4):
        ActionChains(browser).send_keys("\ue004").perform()  # Tab
        reached.append(browser.execute_script(
            "const e = document.activeElement; return e.id || e.tagName;"))
    assert "pad" in reached and "clear" in reached and "file" in reached


def test_narrow_phone_layout_fits(browser, url):
    browser.set_window_size(390, 844)
    try:
        browser.get(url)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth;")
        assert overflow <= 0
        pad = browser.find_element(By.ID, "pad")
        assert pad.size["width"] > 250
    finally:
        browser.set_window_size(1000, 900)


def test_choosing_an_image_file_predicts_it(browser, url, tmp_path):
    from PIL import Image, ImageDraw

    im = Image.new("L", (300, 200), 230)  # a grey "photo" with dark ink, not square
    ImageDraw.Draw(im).line([(120, 40), (190, 40), (140, 170)], fill=20, width=14)
    path = tmp_path / "seven.png"
    im.save(path)
    browser.get(url)
    browser.find_element(By.ID, "file").send_keys(str(path))
    assert shown_digit(browser) == "7"
    assert preview_ink(browser) > 20
