"""Secrets stay in the kernel (issue 15, item 3), and what a job uses is what was sent.

Detection: names, containers, attributes and the token shapes gitleaks and
detect-secrets flag, without flagging ordinary data. End to end, with the
local target's real processes (and the loopback sshd for shipped files): a
credential-named global that a cell's functions do not use is in no file of
the job folder or the blob store; ``job.json`` holds the lines of the
functions the cell uses and nothing else of their cells; a job on this
machine sees none of the kernel's environment but what the target sets; a
shipped file that no longer hashes to its name is not used.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import newest_job, run_remote

from rx_magic.flow.capture import capture_cell
from rx_magic.flow.secrets import looks_generated, looks_secret, secret_shape
from rx_magic.model.local_dirs import data_home
from rx_magic.transport.local import command_environment

# Built from pieces so that no real-looking secret sits in the source.
SENTINEL = "rx-sentinel-" + "5f1c0d9e7a"
FAKE_JWT = "eyJ" + "hbGciOiJIUzI1NiJ9" + ".eyJ" + "zdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
FAKE_AWS_KEY_ID = "AKIA" + "Q3EXAMPLE7FAKE2K"
FAKE_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
FAKE_GITHUB_TOKEN = "ghp_" + "a1B2c3D4" * 4 + "e5F6"
FAKE_GITHUB_OAUTH = "gho_" + "a1B2c3D4" * 4 + "e5F6"
FAKE_FINE_GRAINED = "github_pat_" + "11ABCDEFG0" * 3
FAKE_SLACK_TOKEN = "xoxp-" + "123456789012-abcdefFAKE"
FAKE_GOOGLE_KEY = "AIza" + "SyFAKE_fake-0123456789abcdefghijklm"
FAKE_HF_TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"
FAKE_GENERATED = "9f86d081884c7d65" + "9a2feaa0c55ad015"


# ----------------------------------------------------------------------------- detection

@pytest.mark.parametrize("text, kind", [
    ("postgresql://analyst:" + "hunter2@db.example.org:5432/survey", "a URL with a password"),
    ("https://me:" + "s3cret@example.org/data.csv", "a URL with a password"),
    ("Authorization: Bearer " + "abcdefghijklmnopqrstu", "an Authorization header"),
    ("Bearer " + "abcdef0123456789ghij", "an Authorization header"),
    (FAKE_JWT, "a JSON web token"),
    (f"token is {FAKE_AWS_KEY_ID}", "an AWS access key id"),
    (f"aws_secret_access_key = {FAKE_AWS_SECRET}", "an AWS secret access key"),
    (FAKE_GITHUB_TOKEN, "a GitHub token"),
    (FAKE_GITHUB_OAUTH, "a GitHub token"),
    (FAKE_FINE_GRAINED, "a GitHub token"),
    (FAKE_SLACK_TOKEN, "a Slack token"),
    (FAKE_GOOGLE_KEY, "a Google API key"),
    (FAKE_HF_TOKEN, "a Hugging Face token"),
    ("-----BEGIN " + "PRIVATE KEY-----\nMIIEv\n", "a private key"),
    ("-----BEGIN " + "PGP PRIVATE KEY BLOCK-----\n", "a private key"),
    (f"[service]\nhost = db\napi_key = {FAKE_GENERATED}\n", "a credential assigned in text"),
    (f"curl --data 'token={FAKE_GENERATED}' https://example.org", "a credential assigned in text"),
])
def test_shapes_the_common_scanners_flag_are_found(text, kind):
    assert secret_shape(text) == kind
    assert looks_secret("value", text) == f"its value looks like {kind}"


@pytest.mark.parametrize("text", [
    "The basic idea of tokenization is to split text into tokens.",
    "Bearers of good news arrived at https://example.org/page?user=me",
    "https://example.org:8080/path",
    "ssh://git@github.com/org/repo.git",
    "a password is asked for below",
    "eyJ is how base64 JSON starts",
    "AKIA is a prefix",
    "0123456789abcdef",
    "token: the\npassword = see_the_team_wiki_page\nkey = value",
    "max_tokens = 4096, secret_santa_assignments_2024",
])
def test_ordinary_text_is_not_a_secret(text):
    assert secret_shape(text) is None
    assert looks_secret("text", text) is None


def test_a_secret_nested_in_containers_is_found_and_where_it_is_named():
    value = {"runs": [{"name": "a"}, {"name": "b", "db": ("x", {"url": "postgresql://u:" + "pw@h/db"})}]}
    assert looks_secret("config", value) == "its item ['runs'][1]['db'][1]['url'] looks like a URL with a password"
    assert looks_secret("hosts", {("h", 1), "ssh://u:" + "pw@h"}) == "its item [...] looks like a URL with a password"


def test_a_credential_named_key_or_attribute_holding_text_is_found():
    class Settings:
        def __init__(self):
            self.host = "db.example.org"
            self.api_key = "short"

    @dataclasses.dataclass(frozen=True)
    class Login:
        user: str
        password: str

    assert looks_secret("cfg", Settings()) == "its attribute .api_key has a credential's name"
    assert looks_secret("login", Login("me", "hunter2")) == "its attribute .password has a credential's name"
    assert looks_secret("env", {"HOME": "/home/me", "GITHUB_TOKEN": FAKE_GENERATED}) == (
        "its item ['GITHUB_TOKEN'] has a credential's name")


def test_a_functions_code_carries_its_texts_but_not_a_tokens_placeholder():
    namespace = {}
    exec("def fetch():\n    return call('Bearer ' + " + repr("ghp_" + "x" * 36) + ")\n"
         "def vocabulary():\n    token = '<unk>'\n    secret_word = 'apple'\n    return token\n"
         "def tokenize(text):\n    \"Split on spaces; no password needed.\"\n    return text.split()\n",
         namespace)
    assert looks_secret("fetch", namespace["fetch"]) == "its code looks like a GitHub token"
    assert looks_secret("vocabulary", namespace["vocabulary"]) == (
        "its local variable secret_word has a credential's name")
    assert looks_secret("tokenize", namespace["tokenize"]) is None


def test_a_closure_and_a_notebook_class_carry_what_they_hold():
    def make_client(password):
        return lambda: password

    class Service:
        secret_key = "hunter2"

    Service.__module__ = "__main__"
    assert looks_secret("client", make_client("hunter2")) == "its closure variable password has a credential's name"
    assert looks_secret("Service", Service) == "its attribute .secret_key has a credential's name"


def test_the_message_never_quotes_the_value_nor_a_key_that_looks_like_one():
    reason = looks_secret("users", {FAKE_GITHUB_TOKEN: {"url": "https://u:" + "pw@h"}})
    assert reason == "its item [...]['url'] looks like a URL with a password"
    assert FAKE_GITHUB_TOKEN not in reason


def test_nlp_tokens_and_numbers_are_not_credentials():
    sentences = [{"token": word, "pos": "NOUN", "token_id": index} for index, word in enumerate(["cat", "sat"] * 500)]
    assert looks_secret("parsed", sentences) is None
    assert looks_secret("vectorizer_options", {"token_pattern": r"(?u)\b\w\w+\b", "tokenizer": "bert-base"}) is None
    assert looks_secret("counts", np.arange(1000)) is None
    assert looks_secret("frame", pd.DataFrame({"token": ["a", "b"], "count": [1, 2]})) is None
    assert looks_secret("words", "the password prompt and the API key page are documented here") is None
    assert looks_secret("ids", {"token": FAKE_GENERATED}) == "its item ['token'] has a credential's name"


def test_generated_looking_text_needs_length_digits_and_letters():
    assert looks_generated(FAKE_GENERATED)
    assert not looks_generated("bert-base-uncased")
    assert not looks_generated("short1")
    assert not looks_generated("0123456789012345678")


def test_the_scan_is_bounded():
    deep = {"k": FAKE_GITHUB_TOKEN}
    for _ in range(20):
        deep = {"k": deep}
    assert looks_secret("deep", deep) is None
    many = [[index] for index in range(20_000)] + [FAKE_GITHUB_TOKEN]
    assert looks_secret("many", many) is None
    assert looks_secret("few", [[1]] * 10 + [FAKE_GITHUB_TOKEN]) == "its item [10] looks like a GitHub token"


def test_a_container_holding_a_secret_is_held_back_unless_pushed():
    namespace = {"settings": {"db": {"url": "postgresql://u:" + "pw@h/db"}}}
    capture = capture_cell("print(settings)\n", namespace)
    assert capture.push == {}
    assert capture.warnings == [("held back 'settings' (its item ['db']['url'] looks like a URL with a password): "
                                 "it stays in this kernel; to send it anyway, add --push settings")]
    assert capture_cell("print(settings)\n", namespace, push=["settings"]).push == namespace


def test_a_credential_named_global_is_never_carried_by_a_function_unless_pushed():
    namespace = {"API_TOKEN": SENTINEL, "scale": 2}
    exec("def work(x):\n    return x * scale\n", namespace)
    capture = capture_cell("y = work(1)\n", namespace)
    assert "API_TOKEN" in capture.withheld and "API_TOKEN" not in capture.push
    assert "API_TOKEN" not in capture_cell("y = work(1)\n", namespace, push=["API_TOKEN"]).withheld


# ----------------------------------------------------------------------------- end to end: the job folder

def every_file_under(folder: Path):
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            yield path


def assert_nowhere_in(folder: Path, text: str):
    found = [str(path) for path in every_file_under(folder) if text.encode() in path.read_bytes()]
    assert found == []


def test_a_notebook_functions_unused_credential_global_never_reaches_the_job_folder(ip):
    ip.run_cell(f"API_TOKEN = {SENTINEL!r}\nscale = 3\n\ndef work(x):\n    return x * scale\n\n"
                f"handlers = {{'triple': lambda x: work(x)}}\nclass Model:\n    def fit(self, x):\n"
                f"        return work(x) + 1\n", store_history=True)
    result = run_remote(ip, "local", "y = work(2)\nz = handlers['triple'](1)\nw = Model().fit(1)")
    assert result.error_in_exec is None
    assert (ip.user_ns["y"], ip.user_ns["z"], ip.user_ns["w"]) == (6, 3, 4)
    assert_nowhere_in(data_home() / "local-jobs", SENTINEL)


def test_a_function_using_a_credential_global_through_a_container_holds_it_back(ip, capsys):
    ip.run_cell(f"API_TOKEN = {SENTINEL!r}\ndef call():\n    return len(API_TOKEN)\n"
                "callbacks = {'call': call}\n", store_history=True)
    result = run_remote(ip, "local", "n = callbacks['call']()")
    assert isinstance(result.error_in_exec, NameError)
    assert "held back 'API_TOKEN' (its name looks like a credential)" in capsys.readouterr().err
    assert_nowhere_in(data_home() / "local-jobs", SENTINEL)
    assert run_remote(ip, "local --push API_TOKEN", "n = callbacks['call']()").error_in_exec is None
    assert ip.user_ns["n"] == len(SENTINEL)


def test_job_json_holds_the_lines_of_the_functions_used_and_no_other_line_of_their_cell(ip):
    ip.run_cell(f"db_password = {SENTINEL!r}\nother = 'unrelated line'\n\ndef calibrate(reading):\n"
                f"    scale = 10\n    return scale / reading\n", store_history=True)
    result = run_remote(ip, "local", "value = calibrate(0)")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    text = str(result.error_in_exec.__cause__)
    assert "return scale / reading" in text and "in calibrate" in text      # the traceback still reads
    spec = json.loads((Path(newest_job().paths.folder) / "job.json").read_text())
    [source] = spec["sources"].values()
    assert [line for line in source["lines"] if line.strip()] == [
        "def calibrate(reading):\n", "    scale = 10\n", "    return scale / reading\n"]
    assert SENTINEL not in json.dumps(spec) and "unrelated line" not in json.dumps(spec)


def test_a_used_function_whose_code_holds_a_credential_is_held_back_until_pushed(ip, capsys):
    # a literal travels in the function's pickled code object, whatever job.json's copy of its lines says
    ip.run_cell("def connect():\n    url = 'postgresql://u:" + "hunter2@h/db'\n    return 1 / 0\n", store_history=True)
    result = run_remote(ip, "local", "connect()")
    assert isinstance(result.error_in_exec, NameError)
    assert "held back 'connect' (its code looks like a URL with a password)" in capsys.readouterr().err
    assert_nowhere_in(data_home() / "local-jobs", "hunter2")

    ip.run_cell("def login():\n    password = " + repr(SENTINEL) + "\n    return len(password)\n", store_history=True)
    result = run_remote(ip, "local", "n = login()")
    assert isinstance(result.error_in_exec, NameError)
    assert "held back 'login' (its local variable password has a credential's name)" in capsys.readouterr().err
    assert_nowhere_in(data_home() / "local-jobs", SENTINEL)


def test_a_pushed_functions_line_that_holds_a_credential_is_still_not_in_job_json(ip):
    ip.run_cell("def connect():\n    url = 'postgresql://u:" + "hunter2@h/db'\n    return 1 / 0\n", store_history=True)
    result = run_remote(ip, "local --push connect", "connect()")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    spec = json.loads((Path(newest_job().paths.folder) / "job.json").read_text())
    [source] = spec["sources"].values()
    assert [line for line in source["lines"] if line.strip()] == ["def connect():\n", "    return 1 / 0\n"]


# ----------------------------------------------------------------------------- end to end: the job's environment

def test_a_local_job_sees_none_of_the_kernels_environment_but_what_the_target_sets(ip, monkeypatch, tmp_path,
                                                                                     configure_targets):
    monkeypatch.setenv("RX_TEST_SECRET_TOKEN", SENTINEL)
    result = run_remote(ip, "local", "import os\nseen = os.environ.get('RX_TEST_SECRET_TOKEN')\nhome = "
                                     "os.environ.get('HOME')\npath = os.environ.get('PATH')")
    assert result.error_in_exec is None
    assert ip.user_ns["seen"] is None
    assert (ip.user_ns["home"], ip.user_ns["path"]) == (os.environ["HOME"], os.environ["PATH"])
    assert_nowhere_in(data_home() / "local-jobs", SENTINEL)

    workdir = tmp_path / "jobs"
    workdir.mkdir(mode=0o700)
    configure_targets(here={"workdir": str(workdir), "python": sys.executable,
                            "setup": ["export RX_TEST_FROM_TARGET='set by the target'"]})
    result = run_remote(ip, "here", "import os\nseen = os.environ.get('RX_TEST_SECRET_TOKEN')\n"
                                    "configured = os.environ.get('RX_TEST_FROM_TARGET')")
    assert result.error_in_exec is None
    assert ip.user_ns["seen"] is None
    assert ip.user_ns["configured"] == "set by the target"


def test_a_slurm_job_submitted_from_this_machine_sees_none_of_the_kernels_environment(ip, monkeypatch, tmp_path,
                                                                                     slurm, configure_targets):
    # sbatch exports the environment it is run in to the job (--export=ALL is Slurm's default), so this is
    # about the environment rx_magic runs sbatch in, not the job script
    monkeypatch.setenv("RX_TEST_SECRET_TOKEN", SENTINEL)
    configure_targets(hpc={"scheduler": "slurm", "workdir": str(tmp_path / "jobs"), "python": sys.executable})
    result = run_remote(ip, "hpc", "import os\nseen = os.environ.get('RX_TEST_SECRET_TOKEN')\n"
                                   "slurm_job = os.environ.get('SLURM_JOB_ID')\npath = os.environ.get('PATH')")
    assert result.error_in_exec is None
    assert ip.user_ns["seen"] is None
    assert ip.user_ns["slurm_job"] == newest_job().record.scheduler_id
    # sbatch runs in the user's login shell, as it would be typed there, and exports that shell's PATH
    login_path = subprocess.run(["bash", "-lc", 'printf %s "$PATH"'], env=command_environment(),
                                capture_output=True, text=True, check=True).stdout
    assert ip.user_ns["path"] == login_path
    assert_nowhere_in(tmp_path / "jobs", SENTINEL)


# ----------------------------------------------------------------------------- shipped files are checked

def test_a_shipped_file_that_no_longer_hashes_to_its_name_is_not_used(ip, ssh_target, remote_workdir):
    Path("data.txt").write_text("the data sent\n")
    result = run_remote(ip, "ws --files data.txt", "text = open('data.txt').read()")
    assert result.error_in_exec is None
    assert ip.user_ns["text"] == "the data sent\n"
    [stored] = list((remote_workdir / ".rx" / "files").iterdir())
    os.chmod(stored, 0o600)
    stored.write_text("planted\n")
    os.chmod(stored, 0o400)
    del ip.user_ns["text"]
    result = run_remote(ip, "ws --files data.txt", "text = open('data.txt').read()")
    assert result.error_in_exec is not None
    message = str(result.error_in_exec)
    assert f"refusing to use the shipped file 'data.txt' ({stored}): its content does not hash to its name" in message
    assert f"rm {stored}" in message
    assert "text" not in ip.user_ns
