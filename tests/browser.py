"""A headless-browser check of a report page, for the tests (it needs Chromium, which CI may lack)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path


def page_errors(path: str | Path) -> dict:
    """Open the report in headless Chromium: console errors, images that did not load, and a screenshot.

    Returns {"errors": [...], "images": n loaded, "broken": n broken, "screenshot": path}; raises FileNotFoundError
    when no Chromium is installed (Debian: apt-get install chromium).
    """
    browser = next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install chromium (Debian) to check the report")
    path = Path(path).resolve()
    probe = (
        "<script>window.addEventListener('load', () => { const imgs = [...document.images];"
        "const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;"
        "document.body.setAttribute('data-images', imgs.length); document.body.setAttribute('data-broken', bad); });"
        "</script>"
    )
    with tempfile.TemporaryDirectory() as tmp:
        checked = Path(tmp) / "page.html"
        checked.write_text(path.read_text().replace("</body>", probe + "</body>"))
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            f"--user-data-dir={tmp}/profile",
        ]
        url = checked.as_uri()
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        shot = path.with_suffix(".png")
        subprocess.run(
            [browser, *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
            capture_output=True,
            text=True,
            timeout=120,
        )
    errors = [line for line in dom.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "error" in line)]
    images = re.search(r'data-images="(\d+)"', dom.stdout)
    broken = re.search(r'data-broken="(\d+)"', dom.stdout)
    return {
        "errors": errors,
        "images": int(images.group(1)) if images else 0,
        "broken": int(broken.group(1)) if broken else -1,
        "screenshot": shot if shot.exists() else None,
    }
