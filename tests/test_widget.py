"""The status widget's Python side: what a job's state becomes as traits, buttons, throttling, static views.

No browser is needed: the traits are what the front end draws (tests/test_browser.py looks at that).
"""

import time
from pathlib import Path

import pytest

import rx_magic
from helpers import wait_for
from rx_magic.model.record import JobRecord
from rx_magic.model.resources import Resources
from rx_magic.model.states import State
from rx_magic.ui.background import background_jobs
from rx_magic.ui.widget import MIN_INTERVAL, JobWidget, _assets_dir, full_log, job_traits, job_widget_to_look_at

ROOT = Path(__file__).resolve().parent.parent


def record(state=State.RUNNING, **changes):
    values = dict(id="rx-20261123-141502-3fa9", target="gadi", scheduler="pbs", workdir="/scratch/jobs",
                  scheduler_id="1234.gadi-pbs", state=state, submitted_at=1000.0, first_line="model = fit(data)")
    values.update(changes)
    return JobRecord(**values)


def watched(job, view, timeout=60):
    """Wait for ``job`` as a blocking cell does, refreshing ``view`` every round."""
    state = job.wait(timeout=timeout, each_round=lambda: view.refresh(job.status))
    view.refresh(job.status)
    view.flush()
    return state


# ----------------------------------------------------------------------------- state -> traits

@pytest.mark.parametrize("state", list(State))
def test_every_state_becomes_the_state_trait(state):
    traits = job_traits(record(state, reason="walltime exceeded (1:00:00)"))
    assert traits["state"] == state.value
    assert traits["job_id"] == "rx-20261123-141502-3fa9"
    assert traits["target"] == "gadi"
    assert traits["scheduler_id"] == "1234.gadi-pbs"
    assert traits["first_line"] == "model = fit(data)"
    # the reason is shown for every state but done
    assert traits["reason"] == ("" if state is State.DONE else "walltime exceeded (1:00:00)")


def test_times_come_from_the_record_and_the_status_file():
    running = job_traits(record(State.RUNNING), {"state": "running", "started": 1005.0, "ended": None})
    assert (running["submitted_at"], running["started_at"], running["ended_at"]) == (1000.0, 1005.0, 0.0)
    done = job_traits(record(State.DONE, ended_at=1065.0), {"state": "done", "started": 1005.0, "ended": 1065.0})
    assert done["ended_at"] == 1065.0
    queued = job_traits(record(State.QUEUED))
    assert queued["started_at"] == 0.0          # not started: the front end shows the wait, not a run time


def test_requested_resources_are_shown_and_the_walltime_once():
    resources = Resources.parse(mem="8GB", ncpus=4, walltime="2:00:00")
    traits = job_traits(record(), None, resources)
    assert traits["walltime"] == 7200                       # the bar's limit
    assert traits["resources"] == "mem 8 GiB, 4 cpus"       # not a second time beside it


def test_a_direct_process_id_is_not_shown_as_a_scheduler_job():
    assert job_traits(record(scheduler="direct", scheduler_id="4242"))["scheduler_id"] == ""


# ----------------------------------------------------------------------------- a real job

def test_widget_follows_a_job_to_done_with_the_tail_of_its_output():
    job = rx_magic.submit("for i in range(20):\n    print('line', i)\nimport sys\nprint('oops', file=sys.stderr)\n"
                          "value = 3", "local", walltime="5m")
    view = JobWidget(job)
    assert view.state == "submitted"
    assert view.resources == "" and view.walltime == 300
    assert watched(job, view) is State.DONE
    assert view.state == "done"
    assert view.stdout_tail.splitlines()[-1] == "line 19"
    assert len(view.stdout_tail.splitlines()) <= 8
    assert view.stderr_tail == "oops"
    assert 0 < view.submitted_at <= view.started_at <= view.ended_at


def test_failed_job_shows_its_exit_reason():
    job = rx_magic.submit("import time\ntime.sleep(30)", "local", walltime="1s")
    view = JobWidget(job)
    assert watched(job, view) is State.FAILED
    assert view.state == "failed"
    assert "walltime exceeded" in view.reason


def test_cancel_button_cancels_the_job():
    job = rx_magic.submit("import time\nprint('sleeping', flush=True)\ntime.sleep(60)", "local")
    view = JobWidget(job)
    view._on_message(view, {"action": "cancel"}, [])
    assert job.wait(timeout=30) is State.CANCELLED
    view.refresh(job.status)
    view.flush()
    assert view.state == "cancelled"


def test_log_button_fills_the_full_log():
    job = rx_magic.submit("for i in range(100):\n    print('row', i)", "local")
    job.wait(timeout=60)
    view = JobWidget(job)
    view._on_message(view, {"action": "log"}, [])
    view.flush()
    assert view.log_text.startswith("row 0\n")
    assert "row 99" in view.log_text
    assert full_log(job) == view.log_text


def test_pull_button_shows_only_when_not_automatic_and_asks_the_kernel():
    job = rx_magic.submit("v = 1", "local")
    job.wait(timeout=60)
    assert JobWidget(job).can_pull is False             # blocking cells and --bg pull by themselves
    asked = []
    view = JobWidget(job, auto_pull=False, on_pull=asked.append)
    assert view.can_pull is True
    view._on_message(view, {"action": "pull"}, [])
    assert asked == [view]


def test_a_button_that_fails_says_so_in_the_widget():
    job = rx_magic.submit("v = 1", "local")
    view = JobWidget(job)
    job.wait(timeout=60)

    def broken(_view):
        raise RuntimeError("no route to gadi")

    view.auto_pull, view.on_pull = False, broken
    view._on_message(view, {"action": "pull"}, [])
    view.flush()
    assert view.notes[-1] == "pull failed: no route to gadi"
    assert (view.can_pull, view.arrival) == (True, "")     # the button is offered again


def test_a_pull_whose_results_cannot_be_read_offers_the_button_again(ip):
    job = rx_magic.submit("v = 1", "local")
    job.wait(timeout=60)
    Path(job.paths.outputs).write_bytes(b"not a pickle")     # what a damaged results file holds
    view = job_widget_to_look_at(job)
    view._on_message(view, {"action": "pull"}, [])
    assert view.can_pull is False
    wait_for(lambda: background_jobs(ip).staged, "the job's results to be fetched")
    ip.run_cell("pass")
    view.flush()
    assert "v" not in ip.user_ns
    assert view.notes[-1].startswith("pull failed: its results could not be fetched (")
    assert (view.can_pull, view.arrival) == (True, "")


# ----------------------------------------------------------------------------- throttling

def test_a_burst_of_updates_is_coalesced_into_few_messages():
    job = rx_magic.submit("v = 1", "local")
    view = JobWidget(job)
    sent = view.sent
    for n in range(200):
        view.push(stdout_tail=f"line {n}")
    assert view.sent - sent <= 1                      # the first goes out, the rest wait
    time.sleep(MIN_INTERVAL * 3)
    assert view.stdout_tail == "line 199"             # ...and the last one is not lost
    assert view.sent - sent <= 2


# ----------------------------------------------------------------------------- where widgets do not render

def test_static_summary_names_the_job_and_escapes_the_cell():
    job = rx_magic.submit("v = 1  # <script>alert(1)</script>", "local")
    job.wait(timeout=60)
    view = JobWidget(job)
    view.refresh(job.status)
    view.show_results(["v"], ["'w' stayed on the target: it cannot be pickled (lock)"])
    view.flush()
    data, _ = view._repr_mimebundle_()
    assert data["text/plain"].startswith(f"{job.id} on local: done")
    assert "pulled: v" in data["text/plain"]
    assert "held back: 'w' stayed on the target" in data["text/plain"]
    assert "<script>" not in data["text/html"] and "&lt;script&gt;" in data["text/html"]
    # a job that has ended is a static record: a notebook reopened without a kernel shows it, not a widget error
    assert "application/vnd.jupyter.widget-view+json" not in data
    assert f"job folder: local:{job.paths.folder}" in data["text/plain"]


class DisplayHandle:
    """What IPython's ``display(obj, display_id=True)`` returns, recording ``update`` as it is called."""

    def __init__(self):
        self.updates = []

    def update(self, obj, **kwargs):
        self.updates.append(obj._repr_mimebundle_()[0] if hasattr(obj, "_repr_mimebundle_") else dict(obj))


def test_a_running_job_is_the_live_widget_and_becomes_a_static_record_when_it_ends():
    job = rx_magic.submit("print('from the' + ' job', flush=True)\nimport time\ntime.sleep(0.5)\nv = 1", "local",
                          walltime="5m")
    view = JobWidget(job, echoed=True)     # a blocking cell's: its stream shows the output
    view.display_handle = handle = DisplayHandle()
    data, _ = view._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data      # live while it runs...
    assert {"text/plain", "text/html"} <= set(data)                  # ...with a fallback in the same bundle
    assert watched(job, view) is State.DONE
    view.show_results(["v"], [], arrival="pulled into the notebook")
    view.renew_display()
    final = handle.updates[-1]
    assert set(final) == {"text/plain", "text/html"}
    for text in final.values():
        assert "done" in text and "pulled: v" in text and job.paths.folder in text
        assert "walltime 0:05:00" in text and text.count("walltime") == 1
        assert "from the job" not in text       # the cell's stream shows the output: not a second time


def test_a_background_jobs_record_keeps_its_output_no_stream_showed_it():
    job = rx_magic.submit("print('from the' + ' job', flush=True)", "local")
    view = JobWidget(job)
    assert watched(job, view) is State.DONE
    view.show_results([], [], arrival="pulled into the notebook")
    data = view.static_bundle()
    assert all(text.count("from the job") == 1 for text in data.values()), data


def test_a_blocking_cells_widget_shows_no_tail_the_stream_has_it():
    job = rx_magic.submit("print('once', flush=True)", "local")
    view = JobWidget(job, echoed=True)
    assert watched(job, view) is State.DONE
    assert view.stdout_tail == ""


def test_an_array_with_some_elements_done_says_how_many_not_failed():
    job = rx_magic.submit("v = 1", "local")
    job.wait(timeout=60)
    view = JobWidget(job)
    view.push(state="failed", elements="ddfd", reason="1 of 4 elements failed")
    view.show_results(["v"], [], arrival="pulled into the notebook")
    view.flush()
    assert view.state_label() == "3 of 4 done"
    text = view.summary_text()
    assert text.startswith(f"{job.id} on local: 3 of 4 done") and "failed" not in text.splitlines()[0]


def test_pull_is_acknowledged_at_once():
    job = rx_magic.submit("v = 1", "local")
    job.wait(timeout=60)
    view = JobWidget(job, auto_pull=False, on_pull=lambda _view: None)
    view._on_message(view, {"action": "pull"}, [])
    assert view.arrival == "pull asked: the results arrive when the next cell runs"
    assert view.can_pull is False


def test_a_failed_cell_names_its_error_once(ip):
    job = rx_magic.submit("ratio = 1 / 0", "local")
    job.wait(timeout=60)
    view = JobWidget(job)
    view.refresh(job.status)
    view.show_results([], [], error="ZeroDivisionError: division by zero", arrival="nothing pulled")
    view.flush()
    data, _ = view._repr_mimebundle_()
    for mime in ("text/plain", "text/html"):
        assert data[mime].count("ZeroDivisionError") == 1, data[mime]
        assert "the cell raised ZeroDivisionError: division by zero" in data[mime]


def test_an_error_the_reason_does_not_name_is_added_to_it():
    job = rx_magic.submit("import os\nos._exit(3)", "local")
    job.wait(timeout=60)
    view = JobWidget(job)
    view.refresh(job.status)
    view.show_results([], [], error="KeyError: 'alpha'")
    view.flush()
    assert "exit code 3" in view.reason
    assert f"{view.reason} — KeyError: 'alpha'" in view._repr_mimebundle_()[0]["text/plain"]


def test_front_end_files_are_found_and_shipped_in_the_wheel():
    assert (_assets_dir() / "widget.js").read_text().rstrip().endswith("export default { render };")
    assert (_assets_dir() / "widget.css").is_file()
    assert '"js" = "rx_magic/js"' in (ROOT / "pyproject.toml").read_text()


def test_a_job_shown_outside_jupyter_is_its_plain_repr():
    job = rx_magic.submit("v = 1", "local")
    assert job._repr_mimebundle_() is None          # terminal IPython: the text repr stands
    job.wait(timeout=60)


def test_pull_results_of_a_job_looked_at_brings_them_in_before_the_next_cell(ip):
    from rx_magic.ui.background import background_jobs, close_background_jobs
    from rx_magic.ui.widget import job_widget_to_look_at
    job = rx_magic.submit("looked_at = 'pulled'", "local")
    job.wait(timeout=60)
    view = job_widget_to_look_at(job)
    assert view.can_pull and view.state == "done"
    try:
        view._on_message(view, {"action": "pull"}, [])
        wait_until = time.monotonic() + 30
        while not background_jobs(ip).staged and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert "looked_at" not in ip.user_ns
        ip.run_cell("pass")
        assert ip.user_ns["looked_at"] == "pulled"
        view.flush()
        assert view.can_pull is False and view.pulled == ["looked_at"]
    finally:
        close_background_jobs(ip)


# ----------------------------------------------------------------------------- what a job is called

def test_a_job_is_called_by_its_first_line_that_does_something_or_its_name():
    job = rx_magic.submit("import time\nfrom math import pi\n\n# the slow part\ntotal = pi * 2\n", "local")
    assert job.record.first_line == "total = pi * 2"
    named = rx_magic.submit("import time\nx = 1", "local", name="warm-up")
    assert named.record.first_line == "warm-up"
    only_imports = rx_magic.submit("import time", "local")
    assert only_imports.record.first_line == "import time"
    for each in (job, named, only_imports):
        each.wait(timeout=60)


# ----------------------------------------------------------------------------- accessibility

STATES = ("submitted", "queued", "running", "done", "failed", "cancelled", "unknown")


def css_colour_sets() -> dict[str, dict[str, str]]:
    """The widget's light and dark colour variables, as js/widget.css declares them (dark inherits light)."""
    import re
    css = (_assets_dir() / "widget.css").read_text()
    blocks = re.findall(r"([^{}]+)\{([^{}]*)\}", re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL))

    def variables(body):
        return dict(re.findall(r"--(rx-[\w-]+)\s*:\s*(#[0-9a-fA-F]{6})\s*;", body))

    light = next(variables(body) for selector, body in blocks if selector.strip() == ".rx-job, .rx-jobs")
    dark = next(variables(body) for selector, body in blocks if 'data-jp-theme-light="false"' in selector)
    return {"light": light, "dark": {**light, **dark}}


def contrast(one: str, other: str) -> float:
    """WCAG 2's contrast ratio of two #rrggbb colours."""
    def luminance(colour):
        channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b
    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_colour_pair_passes_wcag_aa_in_both_themes(theme):
    colours = css_colour_sets()[theme]
    assert len(colours) == 16, colours
    text = [("rx-fg", "rx-bg"), ("rx-fg", "rx-panel"), ("rx-fg", "rx-button"), ("rx-muted", "rx-bg"),
            ("rx-muted", "rx-panel"), ("rx-muted", "rx-button"), ("rx-failed", "rx-panel"),   # stderr's tail
            ("rx-on-accent", "rx-failed")]                                                   # "Really cancel?"
    text += [(f"rx-{state}", "rx-bg") for state in STATES]            # the badge, the reason
    marks = [("rx-border", "rx-bg"), ("rx-border", "rx-button"), ("rx-focus", "rx-bg")]
    marks += [(f"rx-{state}", "rx-panel") for state in STATES]        # the walltime bar's fill
    failing = [f"{fg} on {bg}: {contrast(colours[fg], colours[bg]):.2f}:1 (needs {need})"
               for pairs, need in ((text, 4.5), (marks, 3.0)) for fg, bg in pairs
               if contrast(colours[fg], colours[bg]) < need]
    assert not failing, failing


def test_the_static_records_state_badge_passes_wcag_aa():
    from rx_magic.ui.widget import STATIC_BADGE
    assert set(STATIC_BADGE) == set(STATES)
    assert min(contrast("#ffffff", colour) for colour in STATIC_BADGE.values()) >= 4.5


def test_state_changes_are_announced_motion_can_stop_and_controls_are_buttons():
    js = (_assets_dir() / "widget.js").read_text()
    css = (_assets_dir() / "widget.css").read_text()
    assert 'setAttribute("aria-live", "polite")' in js
    reduced = css[css.index("@media (prefers-reduced-motion: reduce)"):]
    assert "animation: none" in reduced[:reduced.index("\n}")]
    assert ":focus-visible" in css
    assert 'element("button", "rx-sort"' in js        # the table's sort headers are buttons
    assert "<div" not in js and "onclick" not in js   # no clickable non-buttons


def test_a_job_shown_as_a_result_is_its_widget_until_its_results_are_pulled_then_its_record(ip):
    from IPython.utils.capture import capture_output

    from rx_magic.ui.background import close_background_jobs
    from rx_magic.ui.widget import show_job
    widget_mime = "application/vnd.jupyter.widget-view+json"
    job = rx_magic.submit("import time\ntime.sleep(1)\nshown = 'pulled'", "local")
    try:
        with capture_output() as captured:
            view = show_job(job)
            outputs = captured._outputs      # what the front end is sent: data, transient display_id, update
            display_id = outputs[0]["transient"]["display_id"]
            assert widget_mime in outputs[0]["data"]            # live while it runs
            wait_until = time.monotonic() + 60
            while not view.can_pull and time.monotonic() < wait_until:     # the monitor saw it end
                time.sleep(0.05)
            assert view.can_pull and widget_mime in outputs[-1]["data"]    # its Pull button stays
            view._on_message(view, {"action": "pull"}, [])
            ip.run_cell("pass")
        assert ip.user_ns["shown"] == "pulled"
        last = outputs[-1]
        assert last["update"] and last["transient"]["display_id"] == display_id
        assert widget_mime not in last["data"] and "pulled: shown" in last["data"]["text/plain"]
    finally:
        close_background_jobs(ip)


def test_showing_a_background_job_does_not_stop_its_results_arriving(ip):
    from IPython.utils.capture import capture_output

    from rx_magic.ui.background import background_jobs, close_background_jobs
    from rx_magic.ui.widget import show_job
    job = rx_magic.submit("import time\ntime.sleep(1)\nbackground_value = 7", "local")
    try:
        background_jobs(ip).adopt(job)
        with capture_output():
            show_job(rx_magic.jobs(1)[0])       # looked at while it runs, as `rx_magic.jobs()[0]` in a cell
        wait_until = time.monotonic() + 60
        while not background_jobs(ip).staged and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert background_jobs(ip).staged        # its monitor still staged the results when it ended
        ip.run_cell("pass")
        assert ip.user_ns["background_value"] == 7
    finally:
        close_background_jobs(ip)
