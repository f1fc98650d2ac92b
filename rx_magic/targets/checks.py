"""``%rx check TARGET``: a checklist of a target's connection and environment.

Each line is ``ok``, ``FAIL`` or ``info``, the item, and what was found; a
``FAIL`` carries its fix. The list is meant to be pasted into a help request,
so it names files, hosts, versions and paths rather than summarising them.

A failing step does not stop the later ones that do not need it: a missing
Python still lets the workdir be checked. Only a failed connection stops the
remote steps, which are then listed as skipped. The check opens its own
connection (a fresh ``Target``), so it reports what a new kernel would meet,
and it leaves the kernel's open targets alone.
"""

from __future__ import annotations

import json
import os
import platform
import posixpath
import shlex
import socket
import sys
import time
from dataclasses import dataclass

from .._version import __version__
from ..errors import ConfigError, RxError, TransportError
from ..model.resources import format_size_human
from .config import load_configs
from .target import PROBE, Target

OK, FAIL, INFO = "ok", "FAIL", "info"

#: Commands each scheduler runs on the submit host.
SCHEDULER_COMMANDS = {
    "direct": ("bash", "setsid", "ps", "kill"),
    "pbs": ("qsub", "qstat", "qdel"),
    "slurm": ("sbatch", "squeue", "sacct", "scancel"),
}
#: Commands a scheduler can do without, and what happens then.
OPTIONAL_COMMANDS = {
    ("direct", "setsid"): "jobs start under nohup instead, without a session of their own",
}
LOW_SPACE = 2**30
REMOTE_ITEMS = ("python", "dill", "IPython", "matplotlib", "numpy", "scheduler commands", "workdir",
                "workdir writable", "free space")

# Prints "name<TAB>path" per name: `command -v`, or for a shell builtin the executable on PATH,
# since rx_magic runs these commands without a shell.
_LOOKUP = r"""
for name do
  found=$(command -v "$name" 2>/dev/null)
  case $found in
    /*) ;;
    *) found=$(IFS=:; for dir in $PATH; do if [ -x "$dir/$name" ]; then echo "$dir/$name"; break; fi; done) ;;
  esac
  printf '%s\t%s\n' "$name" "$found"
done
"""

# Free space where the workdir is, or would be: its nearest existing folder.
_FREE_SPACE = r"""
path=$1
while [ ! -e "$path" ] && [ "$path" != / ]; do path=$(dirname "$path"); done
df -Pk "$path"
"""


@dataclass(frozen=True)
class CheckLine:
    """One line of the checklist: ``status`` is ``ok``, ``FAIL`` or ``info``."""

    status: str
    item: str
    found: str
    fix: str = ""

    def __str__(self) -> str:
        line = f"{self.status:<4}  {self.item:<18} {self.found}"
        return line + (f"\n{'':6}{'fix:':<18} {self.fix}" if self.fix else "")


def format_checklist(name: str, lines: list[CheckLine]) -> str:
    failed = sum(line.status == FAIL for line in lines)
    verdict = f"{failed} problem{'s' if failed != 1 else ''} found" if failed else "no problems found"
    return "\n".join([f"rx_magic check of target {name!r}: {verdict}", *map(str, lines)])


def check_target(name: str) -> list[CheckLine]:
    """Check target ``name`` step by step; never raises for what it finds wrong."""
    lines = [CheckLine(INFO, "this kernel", _client_description())]
    try:
        configs = load_configs()
    except ConfigError as exc:
        return lines + [CheckLine(FAIL, "target", f"the configuration cannot be read: {exc}",
                                  "correct the file named above; `%rx targets` lists what loads")]
    if name not in configs:
        from .config import config_paths
        files = " or ".join(str(path) for path in config_paths())
        return lines + [CheckLine(FAIL, "target", f"{name!r} is not configured; known targets: "
                                  f"{', '.join(sorted(configs))}", f"add [targets.{name}] to {files}")]
    config = configs[name]
    where = "built in" if config.source == "built in" else f"[targets.{name}] in {config.source}"
    lines.append(CheckLine(OK, "target", f"{name} ({where})"))
    try:
        target = Target(config)
    except RxError as exc:
        return lines + [CheckLine(FAIL, "scheduler", str(exc), f"set scheduler in {where}")]
    lines.append(CheckLine(INFO, "transport", f"ssh to {config.host}" if config.host else "local (this machine)"))
    profile = getattr(config, "profile", None)
    lines.append(CheckLine(INFO, "scheduler", config.scheduler + (f" (profile {profile})" if profile else "")))
    try:
        connected = True
        if config.host and getattr(config, "transport", "paramiko") == "openssh":
            connected = _check_openssh(target, lines)
        elif config.host:
            connected = _check_connection(target, lines, where)
        if connected:
            _check_remote(target, lines, where)
        else:
            lines += [CheckLine(INFO, item, "skipped: not connected") for item in REMOTE_ITEMS]
    finally:
        target.close()
    return lines


def _client_description() -> str:
    parts = [f"rx_magic {__version__}", f"Python {platform.python_version()}"]
    for module in ("dill", "paramiko"):
        version = _local_version(module)
        if version:
            parts.append(f"{module} {version}")
    return ", ".join(parts) + f" on {socket.gethostname()} ({platform.system()} {platform.machine()})"


def _local_version(name: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# -- SSH --------------------------------------------------------------------------------------------

def _check_openssh(target: Target, lines: list[CheckLine]) -> bool:
    """Through the user's own ssh and its shared connection: one command; True when it ran."""
    started = time.monotonic()
    try:
        target.transport.run(["true"], timeout=60)
    except TransportError as exc:       # no master: the message names the one command to run in a terminal
        lines.append(CheckLine(FAIL, "ssh", str(exc), "log in once as the message says, then check again"))
        return False
    lines.append(CheckLine(OK, "ssh", f"{target.transport.description}: a command ran through your ssh's shared "
                                      f"connection in {time.monotonic() - started:.2f} s"))
    return True


def _check_connection(target: Target, lines: list[CheckLine], where: str) -> bool:
    """Host, ssh config, host key, authentication and connect time; True when connected."""
    from ..transport.ssh import _fingerprint, resolve_host, ssh_config_path
    config = target.config
    path = ssh_config_path()
    try:
        host = resolve_host(config.host, user=config.user, port=config.port, identity_file=config.identity_file)
    except TransportError as exc:
        lines.append(CheckLine(FAIL, "ssh config", str(exc), f"correct {path}, or test it with `ssh -G {config.host}`"))
        return False
    if os.path.isfile(path):
        lines.append(CheckLine(INFO, "ssh config", path))
    else:
        lines.append(CheckLine(INFO, "ssh config", f"none ({path} does not exist): the target's own settings"))
    proxy = f"ProxyJump {host.proxy_jump}" if host.proxy_jump else "no proxy"
    resolved = f"{config.host} -> user {host.user}, host {host.hostname}, port {host.port}, {proxy}"
    if not host.proxy_jump:
        try:
            socket.getaddrinfo(host.hostname, host.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            lines.append(CheckLine(FAIL, "host", f"{resolved}; cannot resolve {host.hostname}: {exc}",
                                   f"check HostName for {config.host} in {path}, or host in {where}"))
            return False
    lines.append(CheckLine(OK, "host", resolved))

    transport = target.transport
    try:
        info = transport.connect()
    except TransportError as exc:
        lines.extend(_diagnose(target, host, where, exc))
        return False
    key = info.server_key
    kind = f"{key.get_name()} {_fingerprint(key)}"
    known_file = host.known_hosts_files[0]
    if info.host_key == "recorded":
        lines.append(CheckLine(OK, "host key", f"unknown until now: {kind}, recorded in {known_file} "
                                               "(host_key_policy = accept-new)"))
    else:
        lines.append(CheckLine(OK, "host key", f"known: {kind} ({known_file})"))
    lines.append(CheckLine(OK, "auth", info.auth))
    lines.append(CheckLine(OK, "connect time", f"{info.connect_seconds:.2f} s"))
    return True


def _diagnose(target: Target, host, where: str, error: TransportError) -> list[CheckLine]:
    """After a failed connect: take the steps one by one to say which failed, and how to fix it."""
    import paramiko

    from ..transport.ssh import CONNECT_TIMEOUT, _jump_hosts, authenticate, known_host_keys, prefer_known_key_types

    alias = target.config.host
    try:
        chain = [*(_jump_hosts(host.proxy_jump) if host.proxy_jump else []), host]
    except TransportError as exc:
        return [CheckLine(FAIL, "ssh config", f"ProxyJump {host.proxy_jump}: {exc}",
                          f"correct ProxyJump for {alias} in ~/.ssh/config; `ssh -G {alias}` shows what ssh reads")]
    found: list[CheckLine] = []
    transports: list[paramiko.Transport] = []
    try:
        sock = socket.create_connection((chain[0].hostname, chain[0].port), timeout=CONNECT_TIMEOUT)
        for index, hop in enumerate(chain):
            label = "" if hop is host else f"jump host {hop.alias}: "
            transport = paramiko.Transport(sock)
            transports.append(transport)
            prefer_known_key_types(transport, known_host_keys(hop))     # as the connection itself asks
            transport.start_client(timeout=CONNECT_TIMEOUT)
            status, line = _host_key_line(transport.get_remote_server_key(), hop, label, target, where)
            found.append(line)
            if status == "changed" or (status == "unknown" and target.config.host_key_policy != "accept-new"):
                found.append(CheckLine(INFO, "auth", "not tried: the host key was refused"))
                break
            try:
                method = authenticate(transport, hop)
            except TransportError as exc:
                if "refused every key" not in str(exc):    # a second factor or password: the message has its fix
                    text, _, fix = str(exc).partition(" cannot answer it here: ")
                    found.append(CheckLine(FAIL, "auth", label + text.removesuffix(", and rx_magic"), fix or (
                        f"try `ssh -v {alias}`, which may say more")))
                    break
                text = str(exc).split(". Put your public key")[0]
                found.append(CheckLine(FAIL, "auth", label + text, (
                    f"put your public key in ~/.ssh/authorized_keys on {hop.hostname} (`ssh-copy-id -p {hop.port} "
                    f"{hop.user}@{hop.hostname}`), or name the right key with identity_file in {where} or "
                    f"IdentityFile for {hop.alias} in ~/.ssh/config")))
                break
            found.append(CheckLine(OK, "auth", label + method))
            if index + 1 < len(chain):
                following = chain[index + 1]
                sock = transport.open_channel("direct-tcpip", (following.hostname, following.port), ("127.0.0.1", 0))
    except (OSError, paramiko.SSHException, EOFError) as exc:
        reached = f"{chain[0].hostname}:{chain[0].port}" if not transports else f"the SSH server at {host.describe()}"
        seen = {line.item for line in found}
        if "host key" not in seen:
            found.append(CheckLine(INFO, "host key", "not seen: no SSH handshake"))
        if "auth" not in seen:
            found.append(CheckLine(INFO, "auth", "not tried"))
        return found + [CheckLine(FAIL, "connection", f"cannot reach {reached}: {exc or type(exc).__name__}", (
            f"check that the host is up and sshd listens there; try `ssh -v {alias}`; check HostName, Port and "
            f"ProxyJump for {alias} in ~/.ssh/config, or host and port in {where}"))]
    finally:
        for transport in reversed(transports):
            transport.close()
    if any(line.status == FAIL for line in found):
        return found + [CheckLine(INFO, "connection", "not opened: see above")]
    return found + [CheckLine(FAIL, "connection", str(error), f"try `ssh -v {alias}`, which may say more")]


def _host_key_line(key, hop, label: str, target: Target, where: str) -> tuple[str, CheckLine]:
    """Classify the server's key against known_hosts without recording it: known, unknown or changed.

    Reads known_hosts as the connection itself does (``known_host_keys``: markers, hashed and
    wildcard names), so ``@cert-authority`` and ``@revoked`` lines never hide the verdict.
    """
    from ..transport.ssh import _fingerprint, _removal_advice, known_host_keys, trust_command
    name = hop.known_hosts_name
    known = known_host_keys(hop)
    blob = key.asbytes()
    kind = f"{key.get_name()} {_fingerprint(key)}"
    known_file = hop.known_hosts_files[0]
    if any(entry.marker == "@revoked" and entry.blob == blob for entry in known):
        return "changed", CheckLine(FAIL, "host key", f"{label}REVOKED: {name} offers {kind}, which known_hosts "
                                    "marks @revoked", "ask the host's administrators for its current key")
    trusted = [entry for entry in known if not entry.marker]
    if any(entry.blob == blob for entry in trusted):
        found_in = next(entry.path for entry in trusted if entry.blob == blob)
        return "known", CheckLine(OK, "host key", f"{label}known: {kind} ({found_in})")
    if trusted:
        held = "; ".join(entry.describe() for entry in trusted)
        return "changed", CheckLine(FAIL, "host key", f"{label}CHANGED: {name} now offers {kind}, but known_hosts "
                                    f"holds {held}", (
            "this may be an attack, or the host was reinstalled: ask its administrators; only if they confirm "
            f"the new fingerprint, remove the old key with {_removal_advice(name, trusted)} and connect once "
            f"with `{trust_command(hop)}`"))
    if target.config.host_key_policy == "accept-new":
        return "unknown", CheckLine(INFO, "host key", f"{label}unknown: {kind}; host_key_policy = accept-new "
                                                      f"records it in {known_file} on first use")
    return "unknown", CheckLine(FAIL, "host key", f"{label}unknown: {name} offers {kind}, not in {known_file}", (
        f"check that fingerprint with the host's administrators, then run `{trust_command(hop)}` once and answer "
        f"yes (it records the key in {known_file}), or set host_key_policy = \"accept-new\" in {where} to "
        "record it on first use"))


# -- on the submit host -----------------------------------------------------------------------------

def _check_remote(target: Target, lines: list[CheckLine], where: str) -> None:
    for step, item in ((_check_python, "python"), (_check_scheduler_commands, "scheduler commands"),
                       (_check_workdir, "workdir")):
        try:
            step(target, lines, where)
        except RxError as exc:          # one step's surprise must not hide the others' findings
            lines.append(CheckLine(FAIL, item, f"the check itself failed: {exc}", "see the message"))


def _check_python(target: Target, lines: list[CheckLine], where: str) -> None:
    config = target.config
    here = "%d.%d" % sys.version_info[:2]
    script = "\n".join([*config.setup, f"exec {shlex.quote(config.python)} -c {shlex.quote(PROBE)}"])
    found = None
    try:
        result = target.transport.run(["bash", "-c", script], check=False, timeout=120)
        found = json.loads(result.stdout.strip().splitlines()[-1])
        problem = ""
    except TransportError as exc:
        problem = str(exc)
    except (IndexError, ValueError):
        problem = f"exit code {result.returncode}: {result.tail(5) or 'no output'}"
    if found is None:
        setup = " after the setup lines" if config.setup else ""
        lines.append(CheckLine(FAIL, "python", f"{config.python!r} did not run{setup} on "
                                               f"{target.transport.description}: {problem}",
                               f"set python (and setup) in {where} to an interpreter that exists there: "
                               f"Python {here}, with dill"))
        lines += [CheckLine(INFO, item, "skipped: the target's python did not run")
                  for item in ("dill", "IPython", "matplotlib", "numpy")]
        return
    there = ".".join(found["python"].split(".")[:2])
    python = f"{found['python']} ({found['executable']})"
    if there == here:
        lines.append(CheckLine(OK, "python", f"{python}; matches this kernel's {here}"))
    elif config.allow_version_mismatch:
        lines.append(CheckLine(INFO, "python", f"{python}; this kernel runs {platform.python_version()} "
                                               "(allowed by allow_version_mismatch)"))
    else:
        lines.append(CheckLine(FAIL, "python", f"{python}; this kernel runs {platform.python_version()}",
                               f"point python (or setup, e.g. `module load python3/{here}`) in {where} at "
                               f"Python {here}, or set allow_version_mismatch = true there to try anyway"))
    here_dill = _local_version("dill")
    if found.get("dill"):
        same = "same as here" if found["dill"] == here_dill else f"this kernel has {here_dill}"
        lines.append(CheckLine(OK, "dill", f"{found['dill']} ({same})"))
    else:
        lines.append(CheckLine(FAIL, "dill", f"not importable by {found['executable']}",
                               f"install it there (`{config.python} -m pip install --user dill=={here_dill}`) "
                               f"or point python in {where} at an environment that has it"))
    for item, key, without in (("IPython", "ipython", "cells cannot use magics or IPython display"),
                               ("matplotlib", "matplotlib", "cells cannot draw figures"),
                               ("numpy", "numpy", "numpy arrays cannot be sent")):
        if found.get(key):
            lines.append(CheckLine(OK, item, found[key]))
        else:
            lines.append(CheckLine(INFO, item, f"not installed: {without}"))


def _check_scheduler_commands(target: Target, lines: list[CheckLine], where: str) -> None:
    scheduler = target.config.scheduler
    names = SCHEDULER_COMMANDS.get(scheduler, ())
    if not names:
        return
    on = target.transport.description
    lookup = ["sh", "-c", _LOOKUP, "rx-check", *names]
    if target.scheduler.command_path:       # only the configured folder: that is where they will be run from
        lookup = ["env", f"PATH={target.scheduler.command_path}", "/bin/sh", *lookup[1:]]
        on += f", in scheduler_path {target.scheduler.command_path}"
    elif target.scheduler.login_shell_commands:     # as the scheduler runs them: through a login shell
        lookup = ["bash", "-lc", "exec " + shlex.join(lookup)]
        on += ", on the login shell's PATH"
    try:
        result = target.transport.run(lookup, check=False, timeout=60)
    except TransportError as exc:
        lines.append(CheckLine(FAIL, "scheduler commands", f"could not look them up on {on}: {exc}",
                               "see the message; `%rx check` again once it is fixed"))
        return
    paths = dict(line.split("\t", 1) for line in result.stdout.splitlines() if "\t" in line)
    found = [f"{name} {paths[name]}" for name in names if paths.get(name)]
    missing = [name for name in names if not paths.get(name)]
    needed = [name for name in missing if (scheduler, name) not in OPTIONAL_COMMANDS]
    text = ", ".join(found) or "none"
    if needed:
        lines.append(CheckLine(FAIL, "scheduler commands", f"missing on {on}: {', '.join(needed)}; found: {text}", (
            f"the {scheduler} scheduler runs {', '.join(names)}: install what is missing, or make it found "
            f"through setup in {where} (e.g. `module load pbs`, `export PATH=...:$PATH`)")))
    else:
        lines.append(CheckLine(OK, "scheduler commands", text))
    for name in missing:
        if (scheduler, name) in OPTIONAL_COMMANDS:
            lines.append(CheckLine(INFO, "scheduler commands",
                                   f"{name} missing: {OPTIONAL_COMMANDS[scheduler, name]}"))


def _check_workdir(target: Target, lines: list[CheckLine], where: str) -> None:
    transport = target.transport
    try:
        workdir = target.workdir
    except (ConfigError, TransportError) as exc:
        lines.append(CheckLine(FAIL, "workdir", str(exc), f"set workdir in {where}"))
        lines.append(CheckLine(INFO, "workdir writable", "skipped: no workdir"))
        lines.append(CheckLine(INFO, "free space", "skipped: no workdir"))
        return
    usable = False
    try:
        expanded = _expanded_from(target)
        if transport.exists(workdir):
            lines.append(CheckLine(OK, "workdir", f"{workdir} exists{expanded}"))
        else:
            transport.makedirs(workdir, 0o700)
            lines.append(CheckLine(OK, "workdir", f"{workdir} created (mode 0700){expanded}"))
        usable = True
    except (OSError, TransportError) as exc:
        lines.append(CheckLine(FAIL, "workdir", f"{workdir} cannot be created: {exc}",
                               f"create it yourself with mode 0700, or set workdir in {where} to a folder "
                               "you can write (scratch space, not a small home quota)"))
    if usable:
        probe = posixpath.join(workdir, f".rx-check-{os.getpid()}-{time.time_ns()}")
        try:
            transport.write_bytes(probe, b"rx_magic check\n")
            transport.remove_tree(probe)
            if transport.exists(probe):
                raise TransportError(f"{probe} could not be removed")
            lines.append(CheckLine(OK, "workdir writable", "wrote and removed a probe file"))
        except (OSError, TransportError) as exc:
            lines.append(CheckLine(FAIL, "workdir writable", f"{workdir}: {exc}",
                                   f"make {workdir} writable by {target.config.user or 'you'}, or set workdir in "
                                   f"{where} to a folder you can write"))
    else:
        lines.append(CheckLine(INFO, "workdir writable", "skipped: no workdir"))
    _check_free_space(target, workdir, lines, where)


def _expanded_from(target: Target) -> str:
    """How the configured workdir became the path shown: ``{user}`` is the login user on the target."""
    configured = target.config.workdir
    if "{" not in configured and not configured.startswith("~"):
        return ""
    said = [f"from {configured}"]
    if "{user}" in configured:
        user, source = target.login_user(connect=True)
        said.append(f"{{user}} = {user} ({source})")
    return f" ({'; '.join(said)})"


def _check_free_space(target: Target, workdir: str, lines: list[CheckLine], where: str) -> None:
    try:
        result = target.transport.run(["sh", "-c", _FREE_SPACE, "rx-check", workdir], check=False, timeout=60)
        fields = result.stdout.strip().splitlines()[-1].split()
        total, available, mount = int(fields[1]) * 1024, int(fields[3]) * 1024, fields[5]
    except (TransportError, IndexError, ValueError) as exc:
        detail = str(exc) if isinstance(exc, TransportError) else (result.tail(3) or "no output")
        lines.append(CheckLine(INFO, "free space", f"`df -Pk {workdir}` gave no figure: {detail}"))
        return
    text = (f"{format_size_human(available)} free of {format_size_human(total)} on {mount} "
            "(quotas, if any, are not shown)")
    if available < LOW_SPACE:
        lines.append(CheckLine(FAIL, "free space", text, f"free some space, or set workdir in {where} to a "
                                                         "larger file system (scratch)"))
    else:
        lines.append(CheckLine(OK, "free space", text))
