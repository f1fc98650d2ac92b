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
    "%%remote local --walltime 2m --mem 1GB\nimport sys\nvalue = 6 * 7\nprint('hello from the job', flush=True)",
    ("%%remote local --bg --walltime 30s\nimport time\nlater = 'arrived'\nprint('background says hi', flush=True)\n"
     "time.sleep(1)"),
    "print(value, later)",
    "%%remote local --walltime 5m\nimport time\nnap = 120\nprint('sleeping', flush=True)\ntime.sleep(nap)",
    "%%remote local --bg --name table-cancel\nimport time\ntime.sleep(120)",
    "%rx jobs",
    "import rx_magic\nlooked_at = rx_magic.submit('looked = 1', 'local')\nlooked_at",
    "print('looked', looked)",
    ("from rx_magic.ui.widget import JobsTable\n"
     "JobsTable([{'id': f'rx-20260101-000000-{n:06x}', 'state': 'done', 'target': 'local', 'age': f'{n}m',\n"
     "            'first_line': f'step({n})', 'reason': '', 'mine': True, 'submitted_at': 1e9 - 60 * n}\n"
     "           for n in range(200)], 'text')"),
]
WIDGET_ERROR = "Error displaying widget"


def run_cell(page, index: int):
    """Select cell ``index`` and run it with Shift+Enter, as a person would."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    return cell


def shoot(page, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def shoot_cells(page, cells, name: str):
    """The cells' outputs as one picture: in test-artifacts/, and where ``RX_MAGIC_SCREENSHOTS`` says
    (tests/screenshots.py points it at notebooks/images/ to renew the README's pictures)."""
    boxes = [cell.bounding_box() for cell in cells]
    left, top = min(box["x"] for box in boxes), min(box["y"] for box in boxes)
    right = max(box["x"] + box["width"] for box in boxes)
    bottom = max(box["y"] + box["height"] for box in boxes)
    clip = {"x": left, "y": top, "width": min(right - left, 1000), "height": bottom - top}
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), clip=clip)
    if os.environ.get("RX_MAGIC_SCREENSHOTS"):
        page.screenshot(path=str(Path(os.environ["RX_MAGIC_SCREENSHOTS"]) / name), clip=clip)


def seconds_shown(text: str) -> int:
    """The running time in a clock like 'queued 0s · running 1m 05s': in seconds."""
    import re
    found = re.search(r"running (?:(\d+)h )?(?:(\d+)m )?(\d+)(s|m)", text)
    assert found, text
    hours, minutes, last, unit = found.groups()
    if unit == "m":     # 1h 02m
        return int(hours or 0) * 3600 + int(last) * 60
    return int(minutes or 0) * 60 + int(last)


def test_widget_in_jupyterlab_shows_state_output_and_cancels(lab, browser):
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in CELLS])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, str(lab["work"] / "widget.ipynb"))
    page = browser.new_page(viewport={"width": 1200, "height": 1800})
    console = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    cells = page.locator(".jp-Notebook .jp-Cell")
    try:
        page.goto(f"{lab['base']}/lab/tree/widget.ipynb?token={lab['token']}")
        cells.first.wait_for(timeout=60_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=60_000)   # the kernel is up

        run_cell(page, 0)
        blocking = run_cell(page, 1)
        # the live widget, then, once the job has ended and its values are in, the static record in its place
        record = blocking.locator(".rx-job-static", has_text="pulled: value")
        record.wait_for(timeout=60_000)
        assert blocking.locator(".rx-job").count() == 0
        outputs = blocking.locator(".jp-OutputArea").inner_text()
        assert outputs.count("hello from the job") == 1, outputs        # the stream's, not a second copy
        assert "walltime 0:02:00" in record.inner_text() and record.inner_text().count("walltime") == 1
        assert "done" in record.inner_text() and "job folder: local:" in record.inner_text()
        assert "value = 6 * 7" in record.inner_text() and "import sys" not in record.inner_text()  # its name

        background_cell = run_cell(page, 2)
        background = background_cell.locator(".rx-job")
        background.wait_for(timeout=30_000)
        background.locator(".rx-stdout", has_text="background says hi").wait_for(timeout=30_000)
        # ended: its record says when its values come (a notebook saved now shows that, not a widget error)
        background_cell.locator(".rx-job-static", has_text="next cell").wait_for(timeout=30_000)
        after = run_cell(page, 3)
        after.locator(".jp-OutputArea-output", has_text="42 arrived").wait_for(timeout=30_000)
        assert "pulled later" in after.inner_text()
        background_cell.locator(".rx-job-static", has_text="pulled into the notebook").wait_for(timeout=30_000)
        # no stream showed its output: its record keeps it, once
        assert background_cell.locator(".jp-OutputArea").inner_text().count("background says hi") == 1
        assert "background says hi" not in after.inner_text()

        sleeping_cell = run_cell(page, 4)
        sleeping = sleeping_cell.locator(".rx-job")
        sleeping.locator("xpath=self::*[@data-state='running']").wait_for(timeout=30_000)
        assert sleeping.locator(".rx-live[aria-live='polite']").inner_text().endswith(": running")
        clock = sleeping.locator(".rx-clock")
        readings = [seconds_shown(clock.inner_text())]
        while len(readings) < 6 and readings[-1] < 4:      # the clock as it runs: never backwards
            page.wait_for_function("([node, shown]) => node.textContent !== shown",
                                   arg=[clock.element_handle(), clock.inner_text()], timeout=30_000)
            readings.append(seconds_shown(clock.inner_text()))
        assert readings == sorted(readings) and readings[-1] > readings[0], readings
        assert sleeping_cell.locator(".jp-OutputArea").inner_text().count("sleeping") == 1
        shoot_cells(page, [blocking, background_cell, after, sleeping_cell], "widget.png")
        cancel = sleeping.locator(".rx-cancel")
        cancel.focus()
        page.keyboard.press("Enter")                    # a button: the keyboard works it
        assert cancel.inner_text() == "Really cancel?"      # it asks once
        shoot(page, "widget-cancel-asks.png")
        page.keyboard.press("Enter")
        sleeping_cell.locator(".jp-OutputArea-output", has_text="was cancelled by you").wait_for(timeout=30_000)
        sleeping_cell.locator(".rx-job-static", has_text="cancelled").wait_for(timeout=30_000)

        run_cell(page, 5).locator(".rx-job[data-state='running']").wait_for(timeout=30_000)
        jobs_cell = run_cell(page, 6)
        table = jobs_cell.locator(".rx-jobs-table")
        table.wait_for(timeout=30_000)
        assert table.locator("tbody tr").count() == 4
        row = table.locator("tr[data-state='running']")
        assert "table-cancel" in row.inner_text()          # --name names the job
        header = table.locator("thead th").first
        sorter = header.locator("button", has_text="state")
        sorter.focus()
        page.keyboard.press("Enter")
        assert header.get_attribute("aria-sort") == "ascending"
        states = [tr.get_attribute("data-state") for tr in table.locator("tbody tr").all()]
        assert states == sorted(states), states
        page.keyboard.press("Enter")
        states = [tr.get_attribute("data-state") for tr in table.locator("tbody tr").all()]
        assert states == sorted(states, reverse=True), states
        shoot_cells(page, [jobs_cell], "jobs.png")
        page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
        page.wait_for_function("document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        page.wait_for_timeout(500)      # the theme's stylesheet applies after the attribute changes
        shoot_cells(page, [sleeping_cell, cells.nth(5)], "widget-dark.png")
        shoot_cells(page, [jobs_cell], "jobs-dark.png")
        page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
        page.wait_for_function("document.body.dataset.jpThemeLight === 'true'", timeout=30_000)
        row.locator(".rx-cancel").click()
        row.locator(".rx-cancel", has_text="Really cancel?").click()
        table.locator("tr[data-state='cancelled']", has_text="table-cancel").wait_for(timeout=30_000)
        cells.nth(5).locator(".rx-job-static", has_text="cancelled").wait_for(timeout=30_000)

        # a job shown as a cell's result: its widget, a Pull button once it ends, then its record
        looked_cell = run_cell(page, 7)
        pull = looked_cell.locator(".rx-job .rx-pull")
        pull.wait_for(timeout=60_000)
        pull.click()
        # acknowledged at once (the widget, or the record it becomes once the results are staged, says so)
        looked_cell.locator(".jp-OutputArea-output", has_text="the next cell runs").wait_for(timeout=30_000)
        run_cell(page, 8).locator(".jp-OutputArea-output", has_text="looked 1").wait_for(timeout=30_000)
        looked_cell.locator(".rx-job-static", has_text="pulled: looked").wait_for(timeout=30_000)
        assert looked_cell.locator(".rx-job").count() == 0

        # 200 jobs: the table scrolls inside the output under a header that stays, and sorts by age
        many = run_cell(page, 9).locator(".rx-jobs-table")
        many.locator("tbody tr").nth(199).wait_for(state="attached", timeout=30_000)
        scroller = cells.nth(9).locator(".rx-jobs-scroll")
        assert scroller.evaluate("node => node.scrollHeight > 2 * node.clientHeight")
        scroller.evaluate("node => { node.scrollTop = node.scrollHeight; }")
        header, box = many.locator("thead th").first.bounding_box(), scroller.bounding_box()
        assert box["y"] - 1 <= header["y"] <= box["y"] + box["height"] / 4, (header, box)     # still in view
        age = many.locator("thead th button", has_text="age")
        age.focus()
        page.keyboard.press("Enter")
        assert many.locator("tbody tr .rx-age").first.inner_text() == "0m"         # youngest first
        page.keyboard.press("Enter")
        assert many.locator("tbody tr .rx-age").first.inner_text() == "199m"

        page.keyboard.press("Control+s")
        page.wait_for_function("!document.querySelector('.jp-mod-dirty')", timeout=30_000)
    except Exception:
        shoot(page, "failure.png")
        ARTIFACTS.joinpath("failure-console.txt").write_text("\n".join(console))
        raise
    finally:
        page.close()
    reopened_without_a_kernel(lab, browser)


def reopened_without_a_kernel(lab, browser):
    """The saved notebook, opened with no kernel: each job is its static record, never a widget error."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    saved = nbformat.read(str(lab["work"] / "widget.ipynb"), as_version=4)
    mimes = [set(output.get("data", {})) for index in (1, 2, 4, 5, 7) for output in saved.cells[index].outputs]
    assert not any("application/vnd.jupyter.widget-view+json" in kinds for kinds in mimes), mimes
    saved.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "none", "language": "python"}
    nbformat.write(saved, str(lab["work"] / "reopened.ipynb"))
    page = browser.new_page(viewport={"width": 1200, "height": 1800})
    try:
        # a workspace of its own: the first notebook's tab is not restored beside it
        page.goto(f"{lab['base']}/lab/workspaces/reopened/tree/reopened.ipynb?token={lab['token']}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        dialog = page.locator(".jp-Dialog")
        try:    # JupyterLab asks which kernel to start for an unknown one: none
            dialog.wait_for(timeout=10_000)
        except PlaywrightTimeout:
            pass    # it did not ask: no kernel was started either
        else:
            dialog.get_by_role("button", name="No Kernel").or_(dialog.get_by_role("button", name="Cancel")).first.click()
        records = page.locator(".jp-Notebook .rx-job-static").locator("visible=true")
        records.nth(4).wait_for(timeout=30_000)
        # the blocking job, the --bg one, the cancelled one, the --bg one cancelled, the one looked at
        assert records.count() == 5
        shown = page.locator(".jp-Notebook").inner_text()
        tables = [page.locator(".jp-Notebook .jp-Cell").nth(index).inner_text() for index in (6, 9)]
        # a jobs table stays a live widget (its buttons act on jobs): only it may miss its model
        assert shown.count(WIDGET_ERROR) == sum(table.count(WIDGET_ERROR) for table in tables), shown
        shoot(page, "reopened-without-kernel.png")
    finally:
        page.close()
