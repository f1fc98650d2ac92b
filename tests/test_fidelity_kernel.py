"""A remote cell leaves the kernel as if it had run here (issue 13, items 3 to 6).

Random state, figures, process settings and IPython's own behaviour, each
through a real shell and ``%%remote local``: the numbers drawn, the outputs
displayed and their mime types, the settings in force afterwards.
"""

import os
import random
import sys
import textwrap
import warnings
from fractions import Fraction
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from helpers import newest_job, run_remote, wait_for
from IPython.utils.capture import capture_output

from rx_magic.runtime import process_state


def ok(result):
    assert result.error_in_exec is None, result.error_in_exec
    return result


def images(captured) -> list[str]:
    return [output.data["image/png"] for output in captured.outputs if "image/png" in output.data]


@pytest.fixture
def settings_restored():
    """rcParams, numpy's print options and the warnings filters put back as they were after the test."""
    params, printoptions = dict.copy(matplotlib.rcParams), np.get_printoptions()
    with warnings.catch_warnings():
        yield
    dict.update(matplotlib.rcParams, params)
    np.set_printoptions(**printoptions)


@pytest.fixture
def inline_backend(ip):
    """This kernel shows figures inline, as a notebook does; Agg and no inline hooks again afterwards."""
    backend = matplotlib.get_backend()
    mimes = ("image/png", "image/svg+xml", "image/jpeg", "application/pdf")
    formatters = {mime: dict(ip.display_formatter.formatters[mime].type_printers) for mime in mimes}
    yield
    from matplotlib_inline.backend_inline import flush_figures
    for callbacks in ip.events.callbacks.values():
        for callback in [c for c in callbacks if getattr(c, "__name__", "") == flush_figures.__name__]:
            callbacks.remove(callback)
    plt.close("all")
    plt.switch_backend(backend)
    from matplotlib_inline.config import InlineBackend
    if InlineBackend.initialized():
        InlineBackend.instance().figure_formats = {"png"}
    for mime, printers in formatters.items():
        ip.display_formatter.formatters[mime].type_printers.clear()
        ip.display_formatter.formatters[mime].type_printers.update(printers)


# ----------------------------------------------------------------------------- random state (item 3)

def test_a_seeded_notebook_draws_the_same_numbers_from_random_whether_cells_run_here_or_remotely(ip):
    random.seed(7)
    expected = [random.random() for _ in range(3)]
    ok(ip.run_cell("import random\nrandom.seed(7)"))
    ok(run_remote(ip, "local", "first = random.random()"))
    ok(run_remote(ip, "local", "second = random.random()"))
    ok(ip.run_cell("third = random.random()"))
    assert [ip.user_ns[name] for name in ("first", "second", "third")] == expected


def test_a_seeded_notebook_draws_the_same_numbers_from_numpy_random_whether_cells_run_here_or_remotely(ip):
    np.random.seed(3)
    expected = np.random.rand(6)
    ok(ip.run_cell("import numpy as np\nnp.random.seed(3)"))
    ok(run_remote(ip, "local", "a = np.random.rand(2)"))
    ok(run_remote(ip, "local", "b = np.random.rand(2)"))
    ok(ip.run_cell("c = np.random.rand(2)"))
    assert np.concatenate([ip.user_ns["a"], ip.user_ns["b"], ip.user_ns["c"]]).tolist() == expected.tolist()


def test_seeding_remotely_seeds_the_notebook(ip):
    ok(ip.run_cell("import numpy as np"))
    ok(run_remote(ip, "local", "import random\nnp.random.seed(11)\nrandom.seed(11)\nfirst = np.random.rand()"))
    ok(ip.run_cell("second = np.random.rand()\npicked = random.random()"))
    np.random.seed(11)
    random.seed(11)
    assert [ip.user_ns["first"], ip.user_ns["second"]] == np.random.rand(2).tolist()
    assert ip.user_ns["picked"] == random.random()


def test_each_element_of_a_job_array_draws_its_own_numbers(ip):
    ok(ip.run_cell("import random\nrandom.seed(1)"))
    ok(run_remote(ip, "local --map i=[0, 1, 2]", "drawn = random.random()"))
    assert len(set(ip.user_ns["drawn"])) == 3


def test_a_module_not_imported_here_sends_no_state(monkeypatch):
    monkeypatch.delitem(sys.modules, "numpy.random")
    monkeypatch.delitem(sys.modules, "matplotlib")
    sent = process_state.outgoing()
    assert "random" in sent
    assert "numpy.random" not in sent and "matplotlib.rcParams" not in sent


# ----------------------------------------------------------------------------- figures (item 4)

def test_a_figure_made_in_an_earlier_cell_is_changed_remotely_and_comes_back(ip):
    ok(ip.run_cell("import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])"))
    ok(run_remote(ip, "local", """
        ax.set_title("set remotely")
        fig.suptitle("changed remotely")
    """))
    assert ip.user_ns["ax"].get_title() == "set remotely"
    assert ip.user_ns["fig"]._suptitle.get_text() == "changed remotely"
    assert ip.user_ns["ax"].figure is ip.user_ns["fig"]
    assert len(ip.user_ns["fig"].axes[0].lines) == 1


def test_each_plt_show_shows_its_figure_and_open_figures_are_shown_once_at_the_end(ip):
    ok(ip.run_cell("import matplotlib.pyplot as plt"))
    with capture_output() as captured:
        ok(run_remote(ip, "local --no-pull", """
            plt.plot([1, 2])
            plt.show()
            plt.plot([2, 1])
            plt.show()
            plt.figure()
            plt.plot([3, 3])
        """))
    assert len(images(captured)) == 3
    assert len(set(images(captured))) == 3


def test_a_figure_brought_back_is_shown_as_an_image_by_the_inline_backend(ip, inline_backend):
    ok(ip.run_cell("%matplotlib inline"))
    result = ok(run_remote(ip, "local --no-pull", """
        %matplotlib inline
        import matplotlib.pyplot as plt
        figure, axes = plt.subplots()
        axes.plot([1, 3, 2])
        figure
    """))
    shown = result.result
    assert isinstance(shown, matplotlib.figure.Figure)
    as_png = ip.display_formatter.formatters["image/png"]     # a terminal shell leaves it off; a notebook's is on
    assert as_png.lookup(shown)(shown).startswith("iVBORw0KGgo")


def test_matplotlib_inline_in_a_remote_cell_runs_here_and_does_not_fail_there(ip, inline_backend):
    ok(ip.run_cell("import matplotlib.pyplot as plt\nplt.switch_backend('agg')"))
    with capture_output() as captured:
        ok(run_remote(ip, "local", """
            %matplotlib inline
            import matplotlib.pyplot as plt
            plt.plot([1, 2])
            backend_there = plt.get_backend()
        """))
    assert ip.user_ns["backend_there"].lower() == "agg"
    assert "inline" in matplotlib.get_backend()
    assert len(images(captured)) == 1


def test_figures_come_in_the_notebooks_inline_formats_and_empty_ones_as_text(ip, inline_backend):
    ok(ip.run_cell("%matplotlib inline\n%config InlineBackend.figure_formats = ['svg', 'retina']"))
    with capture_output() as captured:
        ok(run_remote(ip, "local --no-pull", """
            import matplotlib.pyplot as plt
            plt.plot([1, 2])
            plt.show()
            plt.figure()
        """))
    shown, empty = captured.outputs
    assert shown.data["image/svg+xml"].lstrip().startswith("<?xml")
    assert empty.data == {"text/plain": "<Figure size 640x480 with 0 Axes>"}
    size = shown.metadata["image/png"]
    assert size["width"] > 100 and size["height"] > 100     # retina: drawn at twice this size


# ----------------------------------------------------------------------------- process settings (item 5)

def test_rcparams_set_here_apply_in_the_job_and_rcparams_set_there_apply_here(ip, settings_restored):
    ok(ip.run_cell("import matplotlib.pyplot as plt\nplt.rcParams['lines.linewidth'] = 4.5"))
    ok(run_remote(ip, "local", """
        width_there = plt.rcParams['lines.linewidth']
        plt.style.use('ggplot')
        plt.rcParams['axes.titlesize'] = 21
    """))
    assert ip.user_ns["width_there"] == 4.5
    assert matplotlib.rcParams["axes.titlesize"] == 21
    assert matplotlib.rcParams["axes.facecolor"] == "#E5E5E5"      # ggplot's
    assert matplotlib.rcParams["lines.linewidth"] == 4.5


def test_numpy_print_options_travel_both_ways(ip, settings_restored):
    ok(ip.run_cell("import numpy as np\nnp.set_printoptions(precision=3)"))
    ok(run_remote(ip, "local", """
        shown_there = repr(np.array([1 / 3]))
        np.set_printoptions(threshold=5)
    """))
    assert ip.user_ns["shown_there"] == "array([0.333])"
    assert np.get_printoptions()["threshold"] == 5
    assert np.get_printoptions()["precision"] == 3


def test_warnings_filters_travel_both_ways(ip, settings_restored):
    ok(ip.run_cell("import warnings\nwarnings.filterwarnings('error', message='rx probe')"))
    ok(run_remote(ip, "local", """
        try:
            warnings.warn("rx probe raised")
            raised = False
        except UserWarning:
            raised = True
        warnings.simplefilter("ignore", ResourceWarning)
    """))
    assert ip.user_ns["raised"] is True
    assert ("ignore", None, ResourceWarning, None, 0) in warnings.filters


def test_a_warning_category_travels_by_name_and_its_filter_waits_there_for_its_module(ip, settings_restored):
    ok(ip.run_cell("import warnings, numpy\nwarnings.simplefilter('error', numpy.exceptions.RankWarning)"))
    ok(run_remote(ip, "local", """
        import sys
        numpy_there_before = "numpy" in sys.modules
        import numpy.exceptions
        try:
            warnings.warn("rank", numpy.exceptions.RankWarning)
            raised = False
        except numpy.exceptions.RankWarning:
            raised = True
    """))
    assert ip.user_ns["numpy_there_before"] is False
    assert ip.user_ns["raised"] is True


def test_pandas_display_options_travel_both_ways(ip):
    pandas = pytest.importorskip("pandas")
    with pandas.option_context("display.max_rows", 7):
        ok(ip.run_cell("import pandas as pd"))
        ok(run_remote(ip, "local", "rows_there = pd.get_option('display.max_rows')\n"
                                   "pd.set_option('display.precision', 2)"))
        assert ip.user_ns["rows_there"] == 7
        assert pandas.get_option("display.precision") == 2
    pandas.reset_option("display.precision")


# ----------------------------------------------------------------------------- IPython itself (item 6)

def test_the_last_value_is_shown_by_this_kernels_formatter(ip):
    printer = ip.display_formatter.formatters["text/plain"]
    printer.for_type(Fraction, lambda value, p, cycle: p.text(f"{value.numerator} over {value.denominator}"))
    try:
        result = ok(run_remote(ip, "local", "from fractions import Fraction\nFraction(2, 6)"))
        assert result.result == Fraction(1, 3)      # the displayhook's: Out[n], as a local cell's value
        assert ip.display_formatter.format(result.result)[0]["text/plain"] == "1 over 3"
    finally:
        printer.pop(Fraction)


def test_a_notebook_class_with_repr_html_is_shown_as_html(ip, monkeypatch):
    monkeypatch.setattr(ip.display_formatter.formatters["text/html"], "enabled", True)   # as in a notebook
    ok(ip.run_cell(textwrap.dedent("""
        class Card:
            def __init__(self, title):
                self.title = title
            def _repr_html_(self):
                return f"<h3>{self.title}</h3>"
    """)))
    result = ok(run_remote(ip, "local", "Card('made remotely')"))
    assert ip.display_formatter.format(result.result)[0]["text/html"] == "<h3>made remotely</h3>"


def test_a_value_that_does_not_come_back_is_shown_as_the_target_rendered_it(ip):
    result = ok(run_remote(ip, "local", "import threading\nthreading.Lock()"))
    assert "unlocked" in repr(result.result)


def test_a_trailing_semicolon_shows_nothing(ip):
    with capture_output() as captured:
        result = ok(run_remote(ip, "local", "x = 21\nx * 2;"))
    assert result.result is None
    shown = [line for line in captured.stdout.splitlines() if not line.startswith("done: job ")]   # terminal's summary
    assert captured.outputs == [] and not any("42" in line for line in shown)
    assert ip.user_ns["x"] == 21


def test_the_last_value_of_a_pulled_name_is_the_object_pulled(ip):
    result = ok(run_remote(ip, "local", "items = [1, 2]\nitems"))
    assert result.result is ip.user_ns["items"]


def test_the_last_value_of_a_pushed_name_is_the_notebooks_own_object_and_is_not_sent_back(ip):
    ip.user_ns["data"] = np.arange(3_000_000)
    result = ok(run_remote(ip, "local", "data[0] = 7\ndata"))
    assert result.result is ip.user_ns["data"]
    assert result.result[0] == 7
    assert (Path(newest_job().paths.folder) / "result.dill").stat().st_size < 1000


def test_a_value_too_big_to_bring_back_is_shown_as_the_target_rendered_it(ip):
    result = ok(run_remote(ip, "local", "b'x' * (17 * 2 ** 20)"))
    assert type(result.result).__name__ == "RemoteResult"
    assert repr(result.result).startswith("b'xxxx")
    assert not (Path(newest_job().paths.folder) / "result.dill").exists()


def test_kernel_magics_in_a_remote_cell_configure_this_kernel(ip, tmp_path, monkeypatch):
    (tmp_path / "rx_probe_extension.py").write_text(
        "def load_ipython_extension(ip):\n    ip.user_ns['probe_loaded'] = ip.user_ns.get('probe_loaded', 0) + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("RX_PROBE_ENV", raising=False)
    try:
        with capture_output() as captured:
            ok(run_remote(ip, "local", """
                %load_ext rx_probe_extension
                %precision 3
                %xmode Minimal
                %env RX_PROBE_ENV=set remotely
                done = True
            """))
        assert ip.user_ns["probe_loaded"] == 1
        assert ip.display_formatter.formatters["text/plain"].float_precision == "3"
        assert ip.InteractiveTB.mode == "Minimal"
        assert os.environ["RX_PROBE_ENV"] == "set remotely"
        assert captured.stdout.count("Exception reporting mode: Minimal") == 1     # the job's, not twice
    finally:
        ip.run_line_magic("precision", "")
        ip.run_line_magic("xmode", "Context")
        ip.extension_manager.loaded.discard("rx_probe_extension")


def test_names_on_timeit_time_and_prun_lines_are_sent(ip):
    ok(ip.run_cell("def work(n):\n    return sum(range(n))\nsize = 1000\nrounds = 3"))
    with capture_output() as captured:
        ok(run_remote(ip, "local", """
            %timeit -n 2 -r 1 work(size)
            %time total = work(rounds)
            %prun -q work(size)
        """))
    assert ip.user_ns["total"] == 3
    assert "loops each" in captured.stdout
    assert set(newest_job().spec()["push"]) == {"work", "size", "rounds"}


def test_star_imports_bring_their_names_back_and_the_cells_own_names_win(ip):
    ok(run_remote(ip, "local", "from math import *\ne = 'mine'\narea = pi * 2 ** 2"))
    assert ip.user_ns["area"] == pytest.approx(12.566, abs=1e-3)
    assert ip.user_ns["sqrt"](16) == 4
    assert ip.user_ns["e"] == "mine"


def test_display_setup_calls_in_a_remote_cell_set_up_this_kernel(ip, monkeypatch):
    (Path.cwd() / "rx_probe_printing.py").write_text(textwrap.dedent("""
        from fractions import Fraction

        def init_printing():
            from IPython import get_ipython
            shell = get_ipython()
            if shell is not None:
                shell.display_formatter.formatters["text/plain"].for_type(
                    Fraction, lambda value, p, cycle: p.text(f"{value.numerator}/{value.denominator} (pretty)"))
    """))
    monkeypatch.syspath_prepend(str(Path.cwd()))
    printer = ip.display_formatter.formatters["text/plain"]
    try:
        ok(run_remote(ip, "local", "from rx_probe_printing import init_printing\ninit_printing()\nhalf = 0.5"))
        assert printer(Fraction(1, 2)) == "1/2 (pretty)"
    finally:
        printer.type_printers.pop(Fraction, None)


def test_a_background_cell_brings_back_its_random_state_settings_and_value(ip, settings_restored, capsys):
    from rx_magic.flow.watch import stop_monitors
    from rx_magic.ui.background import background_jobs, close_background_jobs
    try:
        random.seed(5)
        expected = [random.random() for _ in range(2)]
        ok(ip.run_cell("import random\nrandom.seed(5)\nimport numpy as np"))
        ok(run_remote(ip, "local --bg", "drawn = random.random()\nnp.set_printoptions(precision=2)\n{'late': 1}"))
        wait_for(lambda: background_jobs(ip).staged, "the job's results to be staged")
        with capture_output() as captured:
            ok(ip.run_cell("after = random.random()"))
        assert [ip.user_ns["drawn"], ip.user_ns["after"]] == expected
        assert [output.data["text/plain"] for output in captured.outputs] == ["{'late': 1}"]
        assert np.get_printoptions()["precision"] == 2
    finally:
        stop_monitors()
        close_background_jobs(ip)


# ----------------------------------------------------------------------------- internals relied on

def test_matplotlibs_callback_registry_takes_a_fresh_id_per_pickle_and_pickle_figures_stably_keeps_it():
    # process_state.pickle_figures_stably relies on CallbackRegistry.__getstate__ giving "_cid_gen" as an int
    import pickle

    from matplotlib.cbook import CallbackRegistry
    registry = CallbackRegistry()
    assert isinstance(registry.__getstate__()["_cid_gen"], int)
    process_state.pickle_figures_stably()
    figure = plt.figure()
    try:
        assert pickle.dumps(figure) == pickle.dumps(figure)
    finally:
        plt.close(figure)


def test_ipython_magics_find_the_callers_names_through_stack_depth(ip):
    # the runner wraps run_line_magic and passes _stack_depth + 1, so %time reads the cell's frame
    import inspect
    assert "_stack_depth" in inspect.signature(ip.run_line_magic).parameters


def test_pandas_lists_its_options_with_defaults_and_deprecations():
    pandas = pytest.importorskip("pandas")
    from pandas._config import config
    assert config._registered_options["display.max_rows"].defval == pandas.get_option("display.max_rows")
    assert isinstance(getattr(config, "_deprecated_options", {}), dict)


def test_display_of_a_figure_in_a_remote_cell_shows_the_picture(ip):
    with capture_output() as captured:
        ok(run_remote(ip, "local --no-pull", """
            from IPython.display import display
            import matplotlib.pyplot as plt
            figure, axes = plt.subplots()
            axes.plot([1, 2])
            display(figure)
            plt.close(figure)
        """))
    assert len(images(captured)) == 1


def test_set_matplotlib_formats_in_a_remote_cell_sets_this_kernels_figure_formats(ip, inline_backend):
    ok(run_remote(ip, "local", """
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("svg")
    """))
    as_svg = ip.display_formatter.formatters["image/svg+xml"]
    assert as_svg.lookup_by_type(matplotlib.figure.Figure)


def test_a_remote_cell_that_sets_the_inline_figure_format_shows_its_own_figures_that_way(ip, inline_backend):
    ok(ip.run_cell("%matplotlib inline"))
    with capture_output() as captured:
        ok(run_remote(ip, "local --no-pull", """
            %config InlineBackend.figure_format = 'svg'
            import matplotlib.pyplot as plt
            plt.plot([1, 2])
        """))
    [shown] = captured.outputs
    assert "image/svg+xml" in shown.data and "image/png" not in shown.data
    from matplotlib_inline.config import InlineBackend
    assert InlineBackend.instance().figure_formats == {"svg"}     # and this kernel's figures from now on
