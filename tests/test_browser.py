"""The status widget in a real JupyterLab, driven by headless Chromium: what a person sees and clicks.

JupyterLab (from PyPI) runs on loopback with a token; Debian's ``chromium`` is
driven by Playwright for Python (never ``playwright install``: no browser is
downloaded). Without them the test skips, and fails when ``CI`` is set.
Screenshots go to ``test-artifacts/``.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                         "checkForUpdates": False},
}


def missing_tools() -> list[str]:
    missing = []
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        missing.append("chromium (apt-get install chromium)")
    for module in ("jupyterlab", "playwright"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module} (pip install -e '.[test]')")
    return missing


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    missing = missing_tools()
    if missing:
        message = f"the browser test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("lab")
    work = root / "work"
    work.mkdir()
    env = dict(os.environ)
    for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "JUPYTER_CONFIG_DIR", "JUPYTER_RUNTIME_DIR",
                 "JUPYTERLAB_WORKSPACES_DIR", "JUPYTERLAB_SETTINGS_DIR", "IPYTHONDIR"):
        env[name] = str(root / name.lower())
    env.pop("RX_MAGIC_CONFIG", None)
    for relative, values in SETTINGS.items():
        path = root / "jupyterlab_settings_dir" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = free_port(), secrets.token_hex(16)
    log = open(root / "lab.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}", "--LabApp.expose_app_in_browser=True",
         "--ServerApp.port_retries=0", *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield {"base": base, "token": token, "work": work, "env": env}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(lab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


CELLS = [
    "%load_ext rx_magic",
    "%%remote local --walltime 2m --mem 1GB\nprint('hello from the job', flush=True)\nvalue = 6 * 7",
    "%%remote local --bg\nimport time\nprint('background says hi', flush=True)\ntime.sleep(1)\nlater = 'arrived'",
    "print(value, later)",
    "%%remote local\nimport time\nprint('sleeping', flush=True)\ntime.sleep(120)",
    "%rx jobs",
]


def run_cell(page, index: int):
    """Select cell ``index`` and run it with Shift+Enter, as a person would."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return cell


def shoot(page, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_widget_in_jupyterlab_shows_state_output_and_cancels(lab, browser):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(lab["work"] / "widget.ipynb"))
    page = browser.new_page(viewport={"width": 1200, "height": 1500})
    console = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    try:
        page.goto(f"{lab['base']}/lab/tree/widget.ipynb?token={lab['token']}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)   # the kernel is up

        run_cell(page, 0)
        blocking = run_cell(page, 1)
        job = blocking.locator(".rx-job")
        job.wait_for(timeout=30_000)
        job.locator("xpath=self::*[@data-state='done']").wait_for(timeout=30_000)
        assert "hello from the job" in job.locator(".rx-stdout").inner_text()
        assert "walltime 0:02:00" in job.locator(".rx-resources").inner_text()
        job.locator(".rx-names", has_text="pulled: value").wait_for(timeout=30_000)

        background = run_cell(page, 2).locator(".rx-job")
        background.wait_for(timeout=30_000)
        background.locator("xpath=self::*[@data-state='done']").wait_for(timeout=30_000)
        assert "background says hi" in background.locator(".rx-stdout").inner_text()
        background.locator(".rx-names", has_text="next cell").wait_for(timeout=30_000)
        after = run_cell(page, 3)
        after.locator(".jp-OutputArea-output", has_text="42 arrived").wait_for(timeout=30_000)
        assert "pulled later" in after.inner_text()
        background.locator(".rx-names", has_text="pulled into the notebook").wait_for(timeout=30_000)
        shoot(page, "widget-light.png")

        sleeping = run_cell(page, 4).locator(".rx-job")
        sleeping.locator("xpath=self::*[@data-state='running']").wait_for(timeout=30_000)
        sleeping.locator(".rx-stdout", has_text="sleeping").wait_for(timeout=30_000)
        cancel = sleeping.locator(".rx-cancel")
        cancel.click()
        assert cancel.inner_text() == "Really cancel?"      # it asks once
        shoot(page, "widget-cancel-asks.png")
        cancel.click()
        sleeping.locator("xpath=self::*[@data-state='cancelled']").wait_for(timeout=30_000)
        page.locator(".jp-Notebook .jp-Cell").nth(4).locator(".jp-OutputArea-output",
                                                            has_text="was cancelled by you").wait_for(timeout=30_000)

        table = run_cell(page, 5).locator(".rx-jobs-table")
        table.wait_for(timeout=30_000)
        assert table.locator("tbody tr").count() == 3
        assert table.locator("tr[data-state='cancelled']").count() == 1
        shoot(page, "widget-light-all.png")

        page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.wait_for_timeout(500)
        shoot(page, "widget-dark.png")
    except Exception:
        shoot(page, "failure.png")
        ARTIFACTS.joinpath("failure-console.txt").write_text("\n".join(console))
        raise
    finally:
        page.close()
