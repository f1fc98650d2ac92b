"""Clusters that ask for a second factor, with paramiko: the notebook answers keyboard-interactive.

A real sshd on loopback (tests/otp_sshd.py) demands the user's key and then a
one-time code through PAM. With ``interactive_auth = true`` each of the server's
prompts is asked as hidden input (``getpass``, which ipykernel routes to the
notebook; replaced here by a function that answers), and only in the thread that
runs cells: a monitor thread never asks. The answer is sent and kept nowhere.
"""

import getpass
import logging
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import newest_job, run_remote, wait_for

from rx_magic.errors import ConfigError, ConnectError
from rx_magic.model.states import State
from rx_magic.targets import TargetConfig, get_target, parse_target
from rx_magic.transport.ssh import PARAMIKO_LOG


@pytest.fixture
def otp_target(otp_sshd, tmp_path_factory, monkeypatch, configure_targets, remote_workdir):
    """HOME whose ~/.ssh/config names the server ``rxtest``; ``otp_target(**keys)`` writes target ``ws``."""
    home = tmp_path_factory.mktemp("home")
    otp_sshd.ssh_config(home)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def configure(**keys):
        configure_targets(ws={"host": "rxtest", "python": sys.executable, "workdir": str(remote_workdir), **keys})

    return configure


@pytest.fixture
def asked(otp_sshd, monkeypatch):
    """``getpass.getpass`` answering with the code; the prompts it was given, and in which threads."""
    prompts = []

    def answer(prompt="Password: ", stream=None):
        prompts.append((prompt, threading.current_thread().name))
        return otp_sshd.code

    monkeypatch.setattr(getpass, "getpass", answer)
    return prompts


@pytest.fixture
def paramiko_log():
    """Every record paramiko logs for rx_magic's connections, DEBUG included."""
    records = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append
    logger = logging.getLogger(PARAMIKO_LOG)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def files_holding(text: str, *folders: Path) -> list[Path]:
    found = []
    for folder in folders:
        for root, _dirs, names in os.walk(folder):
            for name in names:
                path = Path(root) / name
                try:
                    if text.encode() in path.read_bytes():
                        found.append(path)
                except OSError:
                    pass            # sockets, fifos
    return found


def test_code_asked_in_the_notebook_is_sent_the_cell_runs_and_the_code_is_kept_nowhere(
        ip, otp_target, otp_sshd, asked, paramiko_log, isolated, remote_workdir, caplog):
    otp_target(interactive_auth=True)
    caplog.set_level(logging.DEBUG)
    ip.user_ns["x"] = 20
    result = run_remote(ip, "ws", "y = x + 1")
    assert result.error_in_exec is None
    assert ip.user_ns["y"] == 21
    assert newest_job().state is State.DONE
    # the server's own prompt, with whom it is for, asked once, in the thread that ran the cell
    assert asked == [(f"({otp_sshd.user}@127.0.0.1) Password: ", threading.main_thread().name)]
    assert otp_sshd.accepted_logins() == 1
    assert get_target("ws").transport.info.auth.startswith("publickey (")
    assert get_target("ws").transport.info.auth.endswith(") and keyboard-interactive")
    # nowhere on disk: job folders, registry, config and cache, sshd's log; nor in any log record
    assert files_holding(otp_sshd.code, isolated, remote_workdir, otp_sshd.root) == []
    messages = [record.getMessage() for record in [*paramiko_log, *caplog.records]]
    assert paramiko_log and not [message for message in messages if otp_sshd.code in message]


def test_without_interactive_auth_the_second_factor_is_refused_naming_the_setting(ip, otp_target, asked):
    otp_target()
    with pytest.raises(ConnectError) as failure:
        get_target("ws").transport.run(["true"])
    message = str(failure.value)
    assert "asks for keyboard-interactive login (a second factor) after accepting" in message
    assert "interactive_auth = true" in message and 'transport = "openssh"' in message
    assert asked == []


def test_a_background_thread_never_asks_and_says_to_run_a_cell(ip, otp_target, asked):
    otp_target(interactive_auth=True)
    transport = get_target("ws").transport
    failures = []

    def monitor():
        try:
            transport.run(["true"])
        except ConnectError as exc:
            failures.append(str(exc))

    thread = threading.Thread(target=monitor, name="rx_magic monitor ws")
    thread.start()
    thread.join(60)
    assert asked == []
    assert len(failures) == 1
    assert "never in the background (this was the thread 'rx_magic monitor ws')" in failures[0]
    assert "run a cell on this target to log in again" in failures[0]
    # the thread that runs cells may ask, and then the background reuses its connection without asking
    assert transport.run(["true"]).returncode == 0
    thread = threading.Thread(target=monitor, name="rx_magic monitor ws")
    thread.start()
    thread.join(60)
    assert len(asked) == 1 and len(failures) == 1


def test_a_wrong_code_is_asked_again_and_refused_after_three_attempts(ip, otp_target, monkeypatch):
    otp_target(interactive_auth=True)
    prompts = []
    monkeypatch.setattr(getpass, "getpass", lambda prompt="", stream=None: prompts.append(prompt) or "123456")
    with pytest.raises(ConnectError) as failure:
        get_target("ws").transport.run(["true"])
    assert len(prompts) == 3
    assert "refused the keyboard-interactive answers given (3 attempts)" in str(failure.value)
    assert "123456" not in str(failure.value)


def test_a_frontend_that_cannot_ask_gives_one_message(ip, otp_target, monkeypatch):
    otp_target(interactive_auth=True)

    def cannot(prompt="", stream=None):
        raise RuntimeError("raw_input was called, but this frontend does not support input requests.")

    monkeypatch.setattr(getpass, "getpass", cannot)
    with pytest.raises(ConnectError, match="could not ask for the login answer .*does not support input requests"):
        get_target("ws").transport.run(["true"])


def test_transport_and_interactive_auth_are_validated():
    base = TargetConfig(name="gadi")
    assert parse_target("gadi", {"host": "gadi", "transport": "openssh"}, "t.toml", base).transport == "openssh"
    assert parse_target("gadi", {"host": "gadi", "interactive_auth": True}, "t.toml", base).interactive_auth
    with pytest.raises(ConfigError, match="unknown transport 'putty'; choose one of paramiko, openssh"):
        parse_target("gadi", {"host": "gadi", "transport": "putty"}, "t.toml", base)
    with pytest.raises(ConfigError, match="interactive_auth must be true or false"):
        parse_target("gadi", {"host": "gadi", "interactive_auth": "yes"}, "t.toml", base)
    with pytest.raises(ConfigError, match="interactive_auth is for transport = \"paramiko\""):
        parse_target("gadi", {"host": "gadi", "transport": "openssh", "interactive_auth": True}, "t.toml", base)


def test_the_monitor_of_a_background_job_never_asks_when_the_link_drops(ip, otp_target, otp_sshd, asked):
    otp_target(interactive_auth=True)
    result = run_remote(ip, "ws --bg", """
        import time
        time.sleep(4)
        answer = 42
    """)
    assert result.error_in_exec is None and len(asked) == 1
    logins = otp_sshd.log.read_text().count("Partial publickey")
    otp_sshd.drop_connections()
    wait_for(lambda: otp_sshd.log.read_text().count("Partial publickey") > logins,
             "the monitor to try to log in again", timeout=60)
    time.sleep(1)
    assert len(asked) == 1                  # it tried, with the key, and did not ask for the code
    job = newest_job()
    assert job.wait(timeout=60) is State.DONE           # this thread asks, and the job is read again
    assert [thread for _, thread in asked] == [threading.main_thread().name] * 2


def test_check_names_the_second_factor_and_its_fix_not_authorized_keys(otp_sshd, otp_target):
    from rx_magic.targets.checks import FAIL, check_target
    otp_target()
    [auth] = [line for line in check_target("ws") if line.status == FAIL]
    assert auth.item == "auth" and "asks for keyboard-interactive" in auth.found
    assert "interactive_auth = true" in auth.fix and "authorized_keys" not in auth.fix
