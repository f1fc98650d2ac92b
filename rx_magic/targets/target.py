"""A configured target, opened: its transport, its scheduler, its Python; one per kernel."""

from __future__ import annotations

import getpass
import json
import os
import platform
import shlex
import sys
import threading
from dataclasses import dataclass, field

from ..errors import ConfigError
from ..schedulers import Scheduler, scheduler_named
from ..transport import LocalTransport, Transport
from .config import TargetConfig, config_paths, load_configs


@dataclass
class Target:
    """A configured target, with its transport opened on first use."""

    config: TargetConfig
    scheduler: Scheduler = field(init=False)
    _transport: Transport | None = field(default=None, init=False, repr=False)
    _environment: tuple | None = field(default=None, init=False, repr=False)
    _remote_user: tuple | None = field(default=None, init=False, repr=False)
    packages_present: set = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.scheduler = scheduler_named(self.config.scheduler, self.config.profile)
        except ConfigError as exc:
            raise ConfigError(f"target {self.name!r} ({self.config.source}): {exc}") from None
        self.scheduler.configure(command_path=self.config.scheduler_path, map_in_one_job=self.config.map_in_one_job,
                                 defaults=self.config.defaults)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_local(self) -> bool:
        return self.config.host is None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            if self.config.host and self.config.transport == "openssh":
                from ..transport.openssh import OpenSSHTransport  # as below: its command agent's module needs paramiko
                self._transport = OpenSSHTransport(
                    self.config.host, user=self.config.user, port=self.config.port,
                    identity_file=self.config.identity_file, host_key_policy=self.config.host_key_policy,
                    python=self.config.python, setup=self.config.setup)
            elif self.config.host:
                from ..transport.ssh import SSHTransport, ask_user  # paramiko is imported only for SSH targets
                self._transport = SSHTransport(
                    self.config.host, user=self.config.user, port=self.config.port,
                    identity_file=self.config.identity_file, host_key_policy=self.config.host_key_policy,
                    python=self.config.python, setup=self.config.setup,
                    prompt=ask_user if self.config.interactive_auth else None)
            else:
                self._transport = LocalTransport()
        return self._transport

    def environment(self) -> dict:
        """The target's Python, after its setup lines: versions of Python, dill, IPython, matplotlib.

        Asked once per connection. Raises ``ConfigError`` when Python's major.minor
        differs from this kernel's (unless ``allow_version_mismatch``) or dill is missing.
        """
        key = id(self.transport), getattr(self.transport, "info", None) and id(self.transport.info)
        if self._environment is None or self._environment[0] != key:
            self._environment = key, probe_environment(self)
        found = self._environment[1]
        check_environment(self, found)
        return found

    @property
    def workdir(self) -> str:
        return self.workdir_path(expand_home=True)

    def workdir_path(self, expand_home: bool) -> str:
        """The job folders' parent; a leading ``~`` is left as it is unless ``expand_home`` (which may connect)."""
        user = self.login_user(connect=expand_home)[0] if "{user}" in self.config.workdir else ""
        try:
            path = self.config.workdir.format(user=user, project=self.config.project or "")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"target {self.name!r}: workdir {self.config.workdir!r} may use only "
                              "{user} and {project}") from exc
        if expand_home:
            path = self.transport.expand_home(path)
        if not path.startswith(("/", "~")) or (expand_home and not path.startswith("/")):
            raise ConfigError(f"target {self.name!r}: workdir {path!r} must be an absolute path or start with ~")
        return path

    def login_user(self, connect: bool = False) -> tuple[str, str]:
        """The user name on the target, and where it came from: ``{user}`` in paths.

        The target's ``user``, else ``User`` for its host in ``~/.ssh/config``, else (when
        ``connect`` or already connected) ``id -un`` there, else ssh's own default, this machine's user.
        """
        if self.is_local:
            return getpass.getuser(), "this machine's user"
        if self.config.user:
            return self.config.user, "the target's user"
        found = ssh_config_user(self.config.host)
        if found:
            return found, f"User in ~/.ssh/config for {self.config.host}"
        if connect or self.transport.connected:
            key = id(self.transport), getattr(self.transport, "info", None) and id(self.transport.info)
            if self._remote_user is None or self._remote_user[0] != key:
                result = self.transport.run(["id", "-un"], check=False, timeout=60)
                name = result.stdout.strip()
                if result.returncode != 0 or not name or any(ch in name for ch in "/\n\0"):
                    raise ConfigError(f"target {self.name!r}: `id -un` on {self.transport.description} did not "
                                      f"name the login user ({result.tail(3) or 'no output'}): set user in "
                                      f"{self.config.source} [targets.{self.name}]")
                self._remote_user = key, name
            return self._remote_user[1], "`id -un` on the target"
        return getpass.getuser(), "ssh's default, this machine's user (no User in ~/.ssh/config)"

    def close(self) -> None:
        self._environment = None
        self._remote_user = None
        self.packages_present = set()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


def ssh_config_user(alias: str) -> str | None:
    """``User`` for ``alias`` in ``~/.ssh/config`` (paramiko's own reading of it, as the SSH transport uses), or None."""
    import paramiko     # only for SSH targets
    from ..transport.ssh import ssh_config_path
    path = ssh_config_path()
    if not os.path.isfile(path):
        return None
    try:
        return paramiko.SSHConfig.from_path(path).lookup(alias).get("user") or None
    except Exception as exc:    # paramiko raises several kinds for a file it cannot parse
        raise ConfigError(f"cannot read {path}: {exc}") from exc


PROBE = """
import json, sys
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except Exception:
        return None
try:
    import dill
    dill_version = dill.__version__
except Exception as exc:
    dill_version = None
print(json.dumps({"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
                  "dill": dill_version, "ipython": version("ipython"), "matplotlib": version("matplotlib"),
                  "numpy": version("numpy")}))
"""


def probe_environment(target: Target) -> dict:
    """Run the target's Python after its setup lines and report what it has."""
    script = "\n".join([*target.config.setup, f"exec {shlex.quote(target.config.python)} -c {shlex.quote(PROBE)}"])
    result = target.transport.run(["bash", "-c", script], check=False, timeout=120)
    lines = result.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ConfigError(
            f"target {target.name!r}: could not run {target.config.python!r} on {target.transport.description} "
            f"after the setup lines (exit code {result.returncode}): {result.tail(5) or 'no output'}. "
            "Check `python` and `setup` in the target's configuration") from None
    return found


def check_environment(target: Target, found: dict) -> None:
    here = "%d.%d" % sys.version_info[:2]
    there = ".".join(found["python"].split(".")[:2])
    if there != here and not target.config.allow_version_mismatch:
        raise ConfigError(
            f"target {target.name!r} runs Python {found['python']} ({found['executable']}) but this kernel runs "
            f"{platform.python_version()}: values pickled here may not load there. Point the target's `python` "
            f"(or its `setup` lines, e.g. `module load python3/{here}`) at Python {here}, or set "
            "allow_version_mismatch = true for the target to try anyway")
    if not found.get("dill"):
        raise ConfigError(
            f"dill is not installed for {found['executable']} on target {target.name!r}: install it there "
            f"(`{target.config.python} -m pip install --user dill`) or point `python` at an environment that has it")


_open_targets: dict[str, Target] = {}
_open_targets_lock = threading.Lock()     # monitor threads and the kernel's thread open targets


def get_target(name: str) -> Target:
    """The target called ``name``, one per kernel, reconfigured when its configuration changes."""
    configs = load_configs()
    if name not in configs:
        files = " or ".join(str(path) for path in config_paths())
        raise ConfigError(f"unknown target {name!r}: known targets are {', '.join(sorted(configs))}; "
                          f"add [targets.{name}] to {files}")
    config = configs[name]
    with _open_targets_lock:
        target = _open_targets.get(name)
        if target is None or target.config != config:
            if target is not None:
                target.close()
            target = _open_targets[name] = Target(config)
        return target


def open_target(name: str) -> Target | None:
    """The target called ``name`` if this kernel has it open, without reading the configuration again."""
    with _open_targets_lock:
        return _open_targets.get(name)


def close_all() -> None:
    with _open_targets_lock:
        targets = list(_open_targets.values())
        _open_targets.clear()
    for target in targets:
        target.close()
