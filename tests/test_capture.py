import os
import textwrap
import types

import matplotlib.pyplot
import numpy
import pytest
from IPython.core.interactiveshell import InteractiveShell

from rx_magic.flow.capture import Capture, CellNames, capture_cell, looks_secret, module_import_line, names_in_cell
from rx_magic.errors import CaptureError

# Built from pieces so that no real-looking secret sits in the source.
FAKE_PEM_KEY = "-----BEGIN " + "OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
FAKE_AWS_KEY_ID = "AKIA" + "Q3EXAMPLE7FAKE2K"
FAKE_GITHUB_TOKEN = "ghp_" + "a1B2c3D4" * 4 + "e5F6"
FAKE_SLACK_TOKEN = "xoxb-" + "123456789012-abcdefFAKE"
FAKE_GOOGLE_KEY = "AIza" + "SyFAKE_fake-0123456789abcdefghijklm"


def cell(code):
    return textwrap.dedent(code).lstrip("\n")


def reads(code):
    return names_in_cell(cell(code)).reads


def binds(code):
    return names_in_cell(cell(code)).binds


# --- reads: straight-line code ------------------------------------------------


def test_name_assigned_before_use_is_not_read():
    assert names_in_cell("x = 1\nprint(x)\n") == CellNames(reads=frozenset({"print"}), binds=("x",))


def test_name_used_before_assignment_is_read():
    assert reads("print(x)\nx = 1\n") == {"print", "x"}


def test_augmented_assignment_reads_its_target():
    assert names_in_cell("x += 1\n") == CellNames(reads=frozenset({"x"}), binds=("x",))


def test_name_on_both_sides_of_an_assignment_is_read():
    assert reads("x = x + 1\n") == {"x"}


def test_read_after_a_conditional_assignment_is_read():
    assert reads("""
        if flag:
            x = 1
        print(x)
    """) == {"flag", "print", "x"}


def test_assignment_on_every_branch_counts_as_sure():
    assert reads("""
        if flag:
            x = 1
        else:
            x = 2
        print(x)
    """) == {"flag", "print"}


def test_loop_body_reading_a_name_it_assigns_later_reads_it():
    assert reads("""
        for i in items:
            total = total + i
    """) == {"items", "total"}


def test_loop_variable_after_the_loop_is_read():
    assert reads("""
        for i in items:
            pass
        print(i)
    """) == {"items", "print", "i"}


def test_walrus_in_a_condition_is_bound_before_the_body():
    assert reads("""
        if (n := len(xs)) > 3:
            print(n)
    """) == {"len", "xs", "print"}


def test_walrus_after_or_is_not_sure():
    assert reads("(a := f()) or (b := g())\nprint(a, b)\n") == {"f", "g", "print", "b"}


def test_handler_path_only_keeps_names_bound_before_the_try():
    assert reads("""
        try:
            x = load()
        except OSError:
            pass
        print(x)
    """) == {"load", "OSError", "print", "x"}


def test_names_in_f_strings_are_read():
    assert reads('f"{value!r:>{width}}"\n') == {"value", "width"}


def test_del_of_a_name_the_cell_did_not_bind_reads_it():
    assert names_in_cell("del old\n") == CellNames(reads=frozenset({"old"}), binds=())


# --- reads: nested scopes ----------------------------------------------------


def test_function_reads_globals_but_not_its_parameters_or_locals():
    assert names_in_cell(cell("""
        def f(a, *args, b=1, **kw):
            c = a + b
            return c + scale + len(args, kw)
    """)) == CellNames(reads=frozenset({"scale", "len"}), binds=("f",))


def test_function_reading_a_name_the_cell_bound_before_the_def_does_not_read_it():
    # The function cannot run before its def, and by then the cell's own value is in place.
    assert reads("""
        data = load()
        def total():
            return data.sum()
        print(total())
    """) == {"load", "print"}


def test_function_reading_a_name_bound_after_the_def_reads_it():
    assert reads("""
        def main():
            return helper()
        def helper():
            return 1
    """) == {"helper"}


def test_name_declared_global_in_a_function_is_read_and_bound():
    assert names_in_cell(cell("""
        def bump():
            global counter
            counter += 1
    """)) == CellNames(reads=frozenset({"counter"}), binds=("counter", "bump"))


def test_closure_reads_enclosing_locals_not_globals():
    assert reads("""
        def outer():
            x = 1
            def inner():
                nonlocal x
                x += 1
                return x + y
            def later():
                return z
            z = 2
            return inner, later
    """) == {"y"}


def test_comprehension_variables_are_not_read():
    assert reads("squares = [i * k for i in range(n) if i % 2]\n") == {"range", "n", "k"}


def test_nested_comprehension_uses_its_earlier_variables():
    assert reads("pairs = {a: b for a in xs for b in a}\n") == {"xs"}


def test_class_body_names_are_not_seen_by_its_methods_or_comprehensions():
    assert names_in_cell(cell("""
        class Model(Base, metaclass=Meta):
            size = 3
            doubled = size * 2
            grid = [i * size for i in range(size)]
            def scaled(self):
                return size
    """)) == CellNames(reads=frozenset({"Base", "Meta", "range", "size"}), binds=("Model",))


def test_decorators_defaults_and_annotations_are_read_where_the_def_runs():
    assert reads("""
        @register(registry)
        def f(x: Tensor = default, *, y=other) -> Result:
            z: Unevaluated = 1
            return x
    """) == {"register", "registry", "Tensor", "default", "other", "Result"}


def test_lambda_reads_its_defaults_and_free_names():
    assert reads("g = lambda a, b=offset: a + b + shift\n") == {"offset", "shift"}


def test_top_level_annotation_is_read():
    assert reads("y: Shape = 2\n") == {"Shape"}


# --- binds ---------------------------------------------------------------------


def test_every_top_level_binding_form_binds_in_first_binding_order():
    code = cell("""
        a = 1
        b, [c, *d] = 2, [3, 4]
        a += 1
        e: int = 5
        for f in range(2):
            pass
        async for g in agen():
            pass
        with open(path) as h, lock as (i, j):
            pass
        async with session() as k:
            pass
        print(l := 6)
        def m(): pass
        async def n(): pass
        class O: pass
        import p
        import q.r
        import s.t as u
        from v import w as x, y
        match thing:
            case [z0, *z1]:
                pass
            case {"k": z2, **z3}:
                pass
            case Point(x=z4) as z5:
                pass
    """)
    assert names_in_cell(code).binds == (
        "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "O",
        "p", "q", "u", "x", "y", "z0", "z1", "z2", "z3", "z4", "z5",
    )


def test_names_bound_inside_top_level_blocks_are_bound():
    assert binds("""
        if flag:
            a = 1
        while more():
            b = 2
        try:
            c = 3
        except ValueError:
            d = 4
        finally:
            e = 5
        with ctx():
            f = 6
    """) == ("a", "b", "c", "d", "e", "f")


def test_names_bound_inside_function_class_lambda_and_comprehension_bodies_are_not_bound():
    assert binds("""
        def f():
            inner = 1
        class C:
            attr = 2
        g = lambda q: q
        squares = [v * v for v in range(3)]
    """) == ("f", "C", "g", "squares")


def test_annotation_without_a_value_does_not_bind():
    assert names_in_cell("x: int\n") == CellNames(reads=frozenset({"int"}), binds=())


def test_walrus_in_a_comprehension_binds_in_the_cell():
    assert names_in_cell("found = any((hit := v) > 3 for v in values)\n") == CellNames(
        reads=frozenset({"any", "values"}), binds=("hit", "found")
    )


def test_except_as_name_is_not_bound():
    assert names_in_cell(cell("""
        try:
            run()
        except ValueError as err:
            message = str(err)
    """)) == CellNames(reads=frozenset({"run", "ValueError", "str"}), binds=("message",))


def test_del_removes_a_name_from_binds():
    assert binds("a = 1\nb = 2\ndel a\n") == ("b",)


def test_global_assigned_in_a_function_is_bound():
    assert binds("""
        def setup():
            global config
            config = {}
    """) == ("config", "setup")


# --- errors ----------------------------------------------------------------------


def test_syntax_error_gives_the_cell_line_number_the_message_and_the_line():
    with pytest.raises(CaptureError) as caught:
        names_in_cell("a = 1\nx = = 1\n", first_line=2)
    assert str(caught.value) == "line 3 of the cell: invalid syntax: `x = = 1`"


def test_error_found_by_the_compiler_also_gives_the_cell_line():
    with pytest.raises(CaptureError) as caught:
        names_in_cell("x = 1\nreturn x\n", first_line=2)
    assert str(caught.value) == "line 3 of the cell: 'return' outside function: `return x`"


def test_line_numbers_inside_a_syntax_error_message_are_in_cell_numbering():
    with pytest.raises(CaptureError) as caught:
        names_in_cell("def f():\nreturn 1\n", first_line=2)
    assert str(caught.value) == (
        "line 3 of the cell: expected an indented block after function definition on line 2: `return 1`"
    )


@pytest.mark.parametrize("code", ["", "   \n\n", "# only a comment\n  # and another\n"])
def test_empty_cell_is_refused(code):
    with pytest.raises(CaptureError) as caught:
        names_in_cell(code)
    assert str(caught.value) == "the cell is empty: write the code to run below the %%remote line"


def test_top_level_await_is_accepted():
    assert names_in_cell("result = await fetch()\n") == CellNames(reads=frozenset({"fetch"}), binds=("result",))


# --- capture_cell: push ------------------------------------------------------------


def test_only_read_names_defined_in_the_notebook_are_pushed():
    capture = capture_cell("y = x + z\nw = 1\nprint(w)\n", {"x": 1, "w": 9, "unused": 3})
    assert capture == Capture(
        code="y = x + z\nw = 1\nprint(w)\n", push={"x": 1}, imports={}, pull=["y", "w"], held_back={}, warnings=[]
    )


def test_modules_travel_as_import_lines_not_values():
    user_ns = {"np": numpy, "os": os, "plt": matplotlib.pyplot, "n": 3}
    capture = capture_cell("a = np.zeros(n)\nos.getcwd()\nplt.plot(a)\n", user_ns)
    assert capture.push == {"n": 3}
    assert capture.imports == {
        "np": "import numpy as np",
        "os": "import os",
        "plt": "import matplotlib.pyplot as plt",
    }


def test_ipython_internals_are_never_pushed():
    internals = [
        "In", "Out", "_", "__", "___", "_i", "_ii", "_iii", "_i7", "_7", "_ih", "_oh", "_dh",
        "exit", "quit", "get_ipython", "__builtins__", "__builtin__", "__name__", "__doc__",
        "__package__", "__loader__", "__spec__", "__custom__",
    ]
    user_ns = {name: object() for name in internals} | {"data": 1}
    code = "result = (" + ", ".join(internals + ["data"]) + ")\n"
    capture = capture_cell(code, user_ns)
    assert list(capture.push) == ["data"]
    assert capture.warnings == []


def test_pushing_an_ipython_internal_by_name_warns_and_sends_nothing():
    capture = capture_cell("y = 1\n", {"_": 42}, push=["_"])
    assert capture.push == {}
    assert capture.warnings == ["--push names '_', which is IPython's own and is never sent"]


def test_builtins_are_pushed_only_when_the_user_shadowed_them():
    assert capture_cell("y = len(list(x))\n", {"x": (1,)}).push == {"x": (1,)}
    assert capture_cell("y = len(list(x))\n", {"x": (1,), "list": sorted}).push == {"list": sorted, "x": (1,)}


def test_push_sends_names_the_cell_does_not_seem_to_read():
    capture = capture_cell("y = eval('a + b')\n", {"a": 1, "b": 2, "c": 3}, push=["a", "b"])
    assert capture.push == {"a": 1, "b": 2}


def test_push_of_a_name_not_in_the_notebook_is_refused():
    with pytest.raises(CaptureError) as caught:
        capture_cell("y = 1\n", {}, push=["foo"])
    assert str(caught.value) == "--push names 'foo' which is not defined in the notebook"


def test_push_or_pull_of_something_that_is_not_a_python_name_is_refused():
    with pytest.raises(CaptureError, match="--pull names '2x', which is not a Python name"):
        capture_cell("y = 1\n", {}, pull=["2x"])


# --- capture_cell: pull ---------------------------------------------------------------


def test_pull_defaults_to_the_names_bound_in_binding_order():
    assert capture_cell("b = 1\na = 2\nb = 3\n", {}).pull == ["b", "a"]


def test_pull_replaces_the_bound_names_and_warns_about_names_never_bound():
    capture = capture_cell("x = 1\nz = 2\n", {}, pull=["z", "y"])
    assert capture.pull == ["z", "y"]
    assert capture.warnings == ["--pull names 'y', which the cell never binds at top level"]


def test_no_pull_brings_nothing_back():
    assert capture_cell("x = 1\n", {}, pull=["x"], no_pull=True).pull == []


def test_ipython_internals_bound_by_the_cell_are_not_pulled_by_default():
    assert capture_cell("for _ in range(3):\n    total = 1\n", {}).pull == ["total"]


# --- secrets -------------------------------------------------------------------------


def test_value_with_a_credential_name_is_held_back_with_how_to_send_it():
    capture = capture_cell("r = call(api_token)\n", {"api_token": "hunter2", "call": len})
    assert capture.push == {"call": len}
    assert capture.held_back == {"api_token": "its name looks like a credential"}
    assert capture.warnings == [
        "held back 'api_token' (its name looks like a credential): it stays in this kernel; "
        "to send it anyway, add --push api_token"
    ]


@pytest.mark.parametrize(
    "secret, kind",
    [
        (FAKE_PEM_KEY, "a private key"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n", "a private key"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHc\n", "a private key"),
        (f"aws_access_key_id = {FAKE_AWS_KEY_ID}\n", "an AWS access key id"),
        (FAKE_GITHUB_TOKEN, "a GitHub token"),
        (FAKE_SLACK_TOKEN, "a Slack token"),
        (FAKE_GOOGLE_KEY, "a Google API key"),
    ],
)
def test_value_that_looks_like_a_secret_is_held_back_and_never_quoted(secret, kind):
    capture = capture_cell("print(blob)\n", {"blob": secret})
    assert capture.push == {}
    assert capture.held_back == {"blob": f"its value looks like {kind}"}
    messages = " ".join([*capture.warnings, *capture.held_back.values()])
    assert secret.strip() not in messages
    assert secret.splitlines()[-1] not in messages


def test_secret_in_bytes_is_found():
    assert looks_secret("raw", FAKE_PEM_KEY.encode()) == "its value looks like a private key"


def test_secret_among_a_dicts_values_is_found_and_where_is_named():
    assert looks_secret("settings", {"user": "me", "key": FAKE_AWS_KEY_ID}) == (
        "its item ['key'] looks like an AWS access key id"
    )
    assert looks_secret("settings", {"nested": {"key": FAKE_AWS_KEY_ID}}) == (
        "its item ['nested']['key'] looks like an AWS access key id"
    )


def test_dict_with_a_credential_key_holding_text_is_found():
    assert looks_secret("db", {"host": "h", "password": "hunter2"}) == "its item ['password'] has a credential's name"


def test_only_the_first_mebibyte_of_a_value_is_scanned():
    assert looks_secret("text", "x" * (1 << 20) + FAKE_AWS_KEY_ID) is None
    assert looks_secret("text", "x " * 1000 + FAKE_AWS_KEY_ID) == "its value looks like an AWS access key id"


@pytest.mark.parametrize(
    "name",
    ["token", "GITHUB_TOKEN", "hf_token", "client_secret", "db_password", "passwd", "API_KEY", "apikey",
     "gcp_credentials", "private_key"],
)
def test_names_that_look_like_credentials(name):
    assert looks_secret(name, 1) == "its name looks like a credential"


@pytest.mark.parametrize("name", ["tokens", "tokenizer", "n_tokens", "data", "keys", "passage"])
def test_ordinary_names_are_not_credentials(name):
    assert looks_secret(name, ["hello", "world"]) is None


def test_naming_a_secret_in_push_sends_it():
    capture = capture_cell("login(password)\n", {"password": "hunter2"}, push=["password"])
    assert capture.push == {"password": "hunter2"}
    assert capture.held_back == {} and capture.warnings == []


# --- module import lines ------------------------------------------------------------


def test_module_import_lines():
    assert module_import_line("numpy", numpy) == "import numpy"
    assert module_import_line("np", numpy) == "import numpy as np"
    assert module_import_line("os", os) == "import os"
    assert module_import_line("plt", matplotlib.pyplot) == "import matplotlib.pyplot as plt"
    assert module_import_line("pyplot", matplotlib.pyplot) == "import matplotlib.pyplot as pyplot"


def test_module_whose_name_cannot_be_imported_is_refused():
    with pytest.raises(CaptureError, match="cannot be recreated with an import"):
        module_import_line("odd", types.ModuleType("not a name"))


def test_code_run_by_the_time_magic_is_read_and_bound():
    code = "x = get_ipython().run_line_magic('time', 'f(a)')\nget_ipython().run_cell_magic('time', '', 'b = g(x)\\n')\n"
    assert names_in_cell(code) == CellNames(reads=frozenset({"get_ipython", "f", "a", "g"}), binds=("x", "b"))


def test_arguments_of_other_magics_are_not_read():
    assert reads("get_ipython().run_line_magic('who', 'a')\n") == {"get_ipython"}


# --- a real IPython shell -------------------------------------------------------------


def test_cell_transformed_by_ipython_is_captured_without_ipython_internals():
    ip = InteractiveShell.instance()
    ip.run_cell("import numpy as np\nsize = 4\n")
    code = ip.transform_cell("x = %time np.zeros(size)\nwith open(path) as fh: pass\n")
    capture = capture_cell(code, ip.user_ns, first_line=2)
    assert "get_ipython" in names_in_cell(code).reads
    assert capture.push == {"size": 4}
    assert capture.imports == {"np": "import numpy as np"}
    assert capture.pull == ["x"]     # the file `with` closed stays behind, and a note says so
    assert any("binds 'fh' to an open file" in warning for warning in capture.warnings)
