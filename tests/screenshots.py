"""Renew the README's pictures of the widget from the real widget, in a real JupyterLab and Debian's chromium.

    .venv/bin/python tests/screenshots.py

runs tests/test_browser.py (it starts JupyterLab on loopback and drives chromium through Playwright, as a
person would) with ``RX_MAGIC_SCREENSHOTS`` set to notebooks/images/, where the test writes its pictures
of the job widget and of the ``%rx jobs`` table in JupyterLab's light and dark themes. Commit them: the
README shows them by their absolute raw.githubusercontent.com address, which PyPI's page also reads.
"""

import os
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "notebooks" / "images"
PICTURES = ("widget.png", "widget-dark.png", "jobs.png", "jobs-dark.png")


def png_size(path: Path) -> tuple[int, int]:
    with path.open("rb") as file:
        header = file.read(24)
    return struct.unpack(">II", header[16:24])


def main() -> int:
    IMAGES.mkdir(parents=True, exist_ok=True)
    before = {name: (IMAGES / name).stat().st_mtime_ns if (IMAGES / name).exists() else 0 for name in PICTURES}
    # CI set: a missing chromium or JupyterLab fails the run instead of skipping it
    env = dict(os.environ, RX_MAGIC_SCREENSHOTS=str(IMAGES), CI=os.environ.get("CI", "1"))
    code = subprocess.call([sys.executable, "-m", "pytest", str(ROOT / "tests" / "test_browser.py"), "-q", "-x"],
                           cwd=ROOT, env=env)
    if code:
        print(f"the browser test failed (exit {code}): no picture was renewed with certainty", file=sys.stderr)
        return code
    stale = [name for name in PICTURES
             if not (IMAGES / name).exists() or (IMAGES / name).stat().st_mtime_ns == before[name]]
    if stale:
        print(f"not renewed: {', '.join(stale)} (tests/test_browser.py no longer takes them)", file=sys.stderr)
        return 1
    for name in PICTURES:
        width, height = png_size(IMAGES / name)
        print(f"{IMAGES / name}: {width}x{height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
