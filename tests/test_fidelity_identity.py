"""What comes back from a remote cell: objects it changed in place, shared identity, the notebook's
functions reading the cell's globals, and what cannot come back, named before anything is sent."""

import numpy as np
import pytest
from helpers import newest_job, run_remote, usage_error


def run_ok(ip, code, line="local"):
    result = run_remote(ip, line, code)
    assert result.success, result.error_in_exec or result.error_before_exec
    return result


def test_a_list_appended_to_remotely_is_the_same_list_here_with_the_item(ip):
    ip.run_cell("lst = [1, 2]\nother = lst\nholder = {'k': lst}")
    run_ok(ip, "lst.append(3)")
    assert ip.user_ns["other"] is ip.user_ns["lst"] is ip.user_ns["holder"]["k"]
    assert ip.user_ns["other"] == [1, 2, 3]


def test_a_fitted_estimator_comes_back_fitted_in_place(ip):
    ip.run_cell(
        "class Grid:\n"
        "    def __init__(self, grid): self.grid = grid\n"
        "    def fit(self, X, y):\n"
        "        scores = {p: -abs(sum(X) * p - sum(y)) for p in self.grid}\n"
        "        self.best_params_ = {'p': max(scores, key=scores.get)}\n"
        "        return self\n"
        "grid = Grid([1, 2, 3])\nsearches = [grid]\nX, y = [1, 2], [3, 3]")
    run_ok(ip, "grid.fit(X, y)")
    assert ip.user_ns["grid"].best_params_ == {"p": 2}
    assert ip.user_ns["searches"][0] is ip.user_ns["grid"]


def test_dict_set_attribute_and_array_changes_come_back_in_place(ip):
    ip.run_cell("import numpy as np\n"
                "class Box: pass\n"
                "d = {'a': 1}; s = {1}; box = Box(); arr = np.arange(6.0); view_of = {'arr': arr}")
    run_ok(ip, "d.update(b=2)\ns.add(2)\nbox.attr = 'v'\narr[...] = 0")
    ns = ip.user_ns
    assert ns["d"] == {"a": 1, "b": 2} and ns["s"] == {1, 2} and ns["box"].attr == "v"
    assert ns["view_of"]["arr"] is ns["arr"] and not ns["arr"].any()


def test_values_that_share_an_object_arrive_and_come_back_sharing_it(ip):
    ip.run_cell("inner = [0]\na = [inner]\nb = {'x': inner}")
    run_ok(ip, "same_remotely = a[0] is b['x']\na[0].append(1)\nc = [a[0]]")
    ns = ip.user_ns
    assert ns["same_remotely"] is True
    assert ns["a"][0] is ns["b"]["x"] is ns["c"][0]
    assert ns["b"]["x"] == [0, 1]


def test_a_pulled_value_holding_an_unchanged_pushed_object_holds_the_notebooks_object(ip):
    ip.run_cell("config = {'lr': 0.1}")
    run_ok(ip, "run = {'config': config, 'loss': 1.0}")
    assert ip.user_ns["run"]["config"] is ip.user_ns["config"]


def test_a_notebook_function_reads_the_cells_globals_not_private_copies(ip):
    ip.run_cell("y = 1\ndef g(v):\n    return v * 10\ndef f():\n    return g(y)")
    run_ok(ip, "y = 5\nresult = f()")
    assert ip.user_ns["result"] == 50


def test_a_closure_shares_its_object_with_the_namespace(ip):
    ip.run_cell("class X:\n    value = 1\n"
                "def make(x):\n    def evaluate():\n        return x.value * 2\n    return evaluate\n"
                "x = X(); f = make(x)")
    run_ok(ip, "x.value = 3\nanswer = f()")
    assert ip.user_ns["answer"] == 6
    assert ip.user_ns["x"].value == 3


def test_a_function_defined_remotely_reads_the_notebooks_globals_here(ip):
    ip.run_cell("scale = 2")
    run_ok(ip, "def times(v):\n    return v * scale")
    ip.run_cell("scale = 7")
    assert ip.user_ns["times"](3) == 21


def test_unchanged_values_do_not_come_back(ip):
    ip.run_cell("data = list(range(100))\nmodel = {'w': 1}")
    run_ok(ip, "total = sum(data)")
    results = newest_job().fetch()
    assert results.changed == []
    assert set(results.values) == {"total"}


# ----------------------------------------------------------------------------- what cannot come back

@pytest.mark.parametrize("code, expected", [
    ("log = open('out.txt', 'w')\nlog.write('x')",
     "line 2 of the cell binds 'log' to an open file (io.TextIOWrapper, from `open('out.txt', 'w')`)"),
    ("import socket\nconn = socket.socket()",
     "line 3 of the cell binds 'conn' to a socket (socket.socket, from `socket.socket()`)"),
    ("squares = (i * i for i in range(3))\nfirst = next(squares)",
     "line 2 of the cell binds 'squares' to a generator (generator, from `(i * i for i in range(3))`)"),
    ("import threading\nguard = threading.Lock()",
     "line 3 of the cell binds 'guard' to a lock (_thread.lock, from `threading.Lock()`)"),
])
def test_a_live_object_the_cell_would_bring_back_is_named_before_anything_is_sent(ip, code, expected):
    result = run_remote(ip, "local", code)
    message = usage_error(result)
    assert message.startswith(expected), message
    assert "--no-pull" in message or "--pull" in message
    assert __import__("rx_magic").jobs(None) == []
    assert not __import__("pathlib").Path("out.txt").exists()


def test_a_live_object_put_into_a_pushed_value_is_named_with_the_value(ip):
    ip.run_cell("handles = []")
    message = usage_error(run_remote(ip, "local", "x = 1\nhandles.append(open('data.txt', 'w'))"))
    assert message.startswith("line 3 of the cell puts an open file (io.TextIOWrapper, from `open('data.txt', 'w')`) "
                              "into 'handles'")
    assert "--pull x" in message


def test_a_live_object_left_out_with_pull_runs_and_the_rest_comes_back(ip):
    run_ok(ip, "f = open('notes.txt', 'w')\nf.write('hello')\nf.flush()\nsize = 5", line="local --pull size")
    assert ip.user_ns["size"] == 5 and "f" not in ip.user_ns


def test_a_file_the_cell_closes_is_not_brought_back_and_a_note_says_so(ip, capsys):
    run_ok(ip, "with open('notes.txt', 'w') as f:\n    f.write('hello')\ndone = True")
    assert ip.user_ns["done"] is True and "f" not in ip.user_ns
    assert "line 2 of the cell binds 'f' to an open file" in capsys.readouterr().err


def test_a_generator_function_defined_in_the_cell_is_recognised(ip):
    code = "def numbers():\n    yield 1\nit = numbers()"
    assert usage_error(run_remote(ip, "local", code)).startswith(
        "line 4 of the cell binds 'it' to a generator (generator, from `numbers()`)")


@pytest.mark.parametrize("code", [
    "text = open('a.txt').read()",
    "for line in open('a.txt'):\n    print(line)",
    "import json\nconfig = json.load(open('a.json'))",
    "lines = [line for line in open('a.txt')]",
    "total = sum(i for i in range(3))",
    "def make():\n    return open('a.txt')",
])
def test_a_live_object_the_cell_only_uses_is_not_named(code):
    from rx_magic.flow.live_objects import find_live_objects
    assert find_live_objects(code, {}) == []


@pytest.mark.parametrize("code, name, stored", [
    ("rows = enumerate(open('a.txt'))", "rows", False),
    ("files = [open(p) for p in paths]", "files", False),
    ("setattr(box, 'f', open('a.txt'))", "box", True),
    ("box.log = open('a.txt', 'a')", "box", True),
    ("cache['f'] = open('a.txt')", "cache", True),
    ("from threading import Lock\nguard = Lock()", "guard", False),
    ("import subprocess as sp\nproc = sp.Popen(['true'])", "proc", False),
    ("fh = path.open()", "fh", False),
])
def test_a_live_object_kept_in_a_name_or_a_value_is_found(code, name, stored):
    from pathlib import Path
    from rx_magic.flow.live_objects import find_live_objects
    found = find_live_objects(code, {"path": Path("a.txt")})
    assert [(live.name, live.stored) for live in found] == [(name, stored)]


# ----------------------------------------------------------------------------- libraries users send first

def test_grid_search_fitted_remotely_has_its_best_params_here(ip):
    pytest.importorskip("sklearn")
    ip.run_cell("from sklearn.datasets import make_classification\n"
                "from sklearn.linear_model import LogisticRegression\n"
                "from sklearn.model_selection import GridSearchCV\n"
                "X, y = make_classification(n_samples=60, random_state=0)\n"
                "grid = GridSearchCV(LogisticRegression(), {'C': [0.1, 1.0]}, cv=3)\n"
                "searches = {'logistic': grid}")
    run_ok(ip, "grid.fit(X, y)")
    grid = ip.user_ns["grid"]
    assert grid.best_params_["C"] in (0.1, 1.0)
    assert ip.user_ns["searches"]["logistic"] is grid
    assert grid.predict(ip.user_ns["X"][:3]).shape == (3,)


def test_a_dataframe_given_a_column_remotely_has_it_here_in_place(ip):
    pytest.importorskip("pandas")
    ip.run_cell("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3]})\nframes = [df]")
    run_ok(ip, "df['c'] = df['a'] * 2")
    assert ip.user_ns["frames"][0] is ip.user_ns["df"]
    assert ip.user_ns["df"]["c"].tolist() == [2, 4, 6]


def test_a_figure_changed_remotely_is_the_same_figure_here_with_its_axes(ip):
    ip.run_cell("import matplotlib\nmatplotlib.use('Agg')\nfrom matplotlib.figure import Figure\n"
                "fig = Figure()\nax = fig.add_subplot()\nax.plot([1, 2])")
    run_ok(ip, "fig.suptitle('remote title')\nax.set_xlabel('x')")
    fig, ax = ip.user_ns["fig"], ip.user_ns["ax"]
    assert fig._suptitle.get_text() == "remote title"
    assert ax.get_xlabel() == "x"
    assert fig.axes == [ax] and ax.figure is fig


def test_a_secret_a_notebook_function_reads_stays_here(ip, capsys):
    ip.run_cell("API_TOKEN = 'not-for-the-target'\ndef headers():\n    return {'auth': API_TOKEN}")
    result = run_remote(ip, "local", "try:\n    got = headers()\nexcept NameError:\n    got = 'missing'")
    assert result.success, result.error_in_exec
    assert ip.user_ns["got"] == "missing"
    assert "held back 'API_TOKEN'" in capsys.readouterr().err
    blobs = list(__import__("pathlib").Path(newest_job().paths.blobs_dir).glob("*"))
    assert blobs and not any(b"not-for-the-target" in blob.read_bytes() for blob in blobs)


def test_a_function_defined_remotely_that_calls_display_comes_back(ip):
    run_ok(ip, "def show(v):\n    display(v)\n    return v")
    assert ip.user_ns["show"](4) == 4


def test_pulling_into_a_namespace_of_ones_own_resolves_its_objects_there():
    import rx_magic
    namespace = {"items": [1]}
    alias = namespace["items"]
    job = rx_magic.submit("items.append(2)\ncount = len(items)", "local", namespace)
    job.pull(namespace)
    assert namespace["count"] == 2 and namespace["items"] is alias and alias == [1, 2]


# ----------------------------------------------------------------------------- the wire format underneath

def _there_and_back(values: dict, changed: set, here: dict) -> dict:
    """Write ``values`` as a runner does, referring to ``here``'s objects by name, and read them into ``here``."""
    import io
    from rx_magic.runtime import wire
    file = io.BytesIO()
    tokens = wire.Tokens({name: values[name] for name in here}, changed)
    for name, value in values.items():
        wire.dump((name, value), file, tokens=tokens)
    file.seek(0)
    in_place, loaded = wire.InPlace(here), {}
    while True:
        try:
            name, value = wire.load(file, in_place)
        except EOFError:
            break
        loaded[name] = value
    in_place.commit()
    return {**loaded, **in_place.rebuilt}


class Node:
    pass


class Point:
    __slots__ = ("x", "y")


def test_an_object_that_refers_to_itself_is_updated_in_place_and_still_refers_to_itself():
    there = Node()
    there.me, there.children = there, [there]
    here = Node()
    loaded = _there_and_back({"node": there}, {"node"}, {"node": here})
    assert loaded["node"] is here and here.me is here and here.children[0] is here


def test_nothing_changes_here_until_everything_has_loaded():
    import io
    from rx_magic.runtime import wire
    here, there = {"lst": [1]}, [1, 2]
    file = io.BytesIO()
    wire.dump(("lst", there), file, tokens=wire.Tokens({"lst": there}, {"lst"}))
    in_place = wire.InPlace(here)
    file.seek(0)
    while True:
        try:
            wire.load(file, in_place)
        except EOFError:
            break
    assert here["lst"] == [1]
    in_place.commit()
    assert here["lst"] == [1, 2]


def test_an_array_of_another_shape_is_rebound_not_written_into():
    here = {"arr": np.zeros(3)}
    old = here["arr"]
    loaded = _there_and_back({"arr": np.ones(4)}, {"arr"}, here)
    assert loaded["arr"] is not old and loaded["arr"].shape == (4,) and not old.any()


def test_slots_objects_are_updated_in_place():
    there, here = Point(), Point()
    there.x, here.x, here.y = 1, 0, 0
    assert _there_and_back({"p": there}, {"p"}, {"p": here})["p"] is here
    assert here.x == 1 and not hasattr(here, "y")


def test_recursive_and_closure_functions_travel_with_their_globals_bound_to_where_they_land():
    from rx_magic.runtime import wire
    source = {"__name__": "__main__"}
    exec("def fact(n):\n    return 1 if n < 2 else n * fact(n - 1)\n"
         "def counter():\n    count = 0\n    def step():\n        nonlocal count\n        count += 1\n"
         "        return count + offset\n    return step\noffset = 100\nstep = counter()\nstep()", source)
    landed = {"__name__": "__main__"}
    with wire.loading_into(landed) as carried:
        fact, step = wire.loads(wire.dumps((source["fact"], source["step"])))
    landed.update(carried)
    assert fact(5) == 120 and fact.__globals__ is landed
    assert step() == 102    # the closure's state came along; the global is the landing namespace's
    landed["offset"] = 0
    assert step() == 3


def test_dry_run_lists_what_comes_back_if_changed_in_place(ip, capsys):
    ip.run_cell("lst = [1]\nn = 3")
    run_ok(ip, "lst.append(n)", line="local --dry-run")
    report = capsys.readouterr().out
    assert "pull if changed in place: lst\n" in report


def test_frames_of_one_file_share_what_their_values_share():
    import io
    from rx_magic.runtime import wire
    inner = [0]
    file, tokens = io.BytesIO(), wire.Tokens()
    wire.dump(("a", [inner]), file, tokens=tokens)
    wire.dump(("b", {"x": inner}), file, tokens=tokens)
    file.seek(0)
    in_place = wire.InPlace({})
    loaded = dict(wire.load(file, in_place) for _ in range(2))
    assert loaded["a"][0] is loaded["b"]["x"] == [0]


def test_a_pulled_value_that_does_not_pickle_is_named_and_the_others_still_share(ip, capsys):
    run_ok(ip, "import sys\ninner = [0]\na = [inner]\nbad = [inner, sys.stdout]\nb = {'x': inner}",
           line="local --pull a,bad,b")
    assert ip.user_ns["a"][0] is ip.user_ns["b"]["x"] and "bad" not in ip.user_ns
    assert "'bad' stayed on the target: it cannot be pickled" in capsys.readouterr().err


def test_a_global_a_notebook_function_assigns_comes_back(ip):
    ip.run_cell("total = 0\ndef add(v):\n    global total, last\n    total += v\n    last = v")
    run_ok(ip, "add(5)")
    assert ip.user_ns["total"] == 5 and ip.user_ns["last"] == 5


def test_values_that_share_a_mutable_or_large_object_are_planned_as_one_blob_and_the_rest_alone():
    from rx_magic.flow.blobs import plan_blobs, total_size
    namespace = {"__name__": "__main__"}
    exec("text = 'x' * 200_000\ndef count():\n    return len(text)\nshared = [1]\nholder = {'k': shared}", namespace)
    values = {name: namespace[name] for name in ("count", "text", "shared", "holder")}
    values["alone"], values["copy"] = np.zeros(3), [1]
    refs = {ref.name: ref for ref in plan_blobs(values, limit=None)}
    assert refs["count"].together == refs["text"].together == ("count", "text")
    assert refs["shared"].together == ("shared", "holder")
    assert refs["alone"].together == refs["copy"].together == ()
    assert total_size(list(refs.values())) < 2 * 200_000


def test_values_pulled_into_another_namespace_load_unless_they_hold_an_object_only_the_first_one_has():
    import rx_magic
    from rx_magic.errors import PullError
    job = rx_magic.submit("total = len(items)\nrun = {'items': items}", "local", {"items": [1, 2]}, pull=["total"])
    pulled = {}
    job.pull(pulled)
    assert pulled == {"total": 2}
    job = rx_magic.submit("run = {'items': items}", "local", {"items": [1, 2]})
    with pytest.raises(PullError, match="holds the notebook's 'items', which is not defined"):
        job.pull({})


def test_a_value_changed_in_place_pulled_into_another_namespace_arrives_as_a_new_object():
    import rx_magic
    job = rx_magic.submit("items.append(3)", "local", {"items": [1, 2]})
    pulled = {}
    job.pull(pulled)
    assert pulled == {"items": [1, 2, 3]}


def test_pull_names_what_comes_back_changed_in_place_too_and_no_pull_brings_nothing(ip):
    ip.run_cell("lst = [1]\nother = lst\nseen = {}")
    run_ok(ip, "lst.append(2)\nseen['k'] = 1\nx = 3", line="local --pull lst")
    assert ip.user_ns["other"] == [1, 2] and ip.user_ns["seen"] == {} and "x" not in ip.user_ns
    run_ok(ip, "lst.append(3)\nseen['k'] = 1", line="local --no-pull")
    assert ip.user_ns["lst"] == [1, 2] and ip.user_ns["seen"] == {}
