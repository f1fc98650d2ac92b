"""Host keys as OpenSSH's ``StrictHostKeyChecking`` treats them, against real sshd servers on loopback.

One server here has two host keys (ed25519 and ECDSA), as most real hosts do; the
shared ``sshd`` has only ed25519. known_hosts is written as users' files are: plain
and hashed names, several key types, ``@cert-authority`` and ``@revoked`` lines,
comments and lines OpenSSH would skip.

- The key types asked for follow what known_hosts holds for the host, so a host known
  by its ECDSA key proves itself with that key (paramiko alone prefers ed25519).
- A host known by any key that does not show it is refused as CHANGED, under
  ``accept-new`` too, naming both fingerprints, the file and the ``ssh-keygen -R`` line.
- ``accept-new`` records a key only for a host known_hosts holds no key for.
"""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_remote
from sshd import fingerprint, sshd_available, start_for_tests

import rx_magic
from rx_magic.errors import ConnectError
from rx_magic.targets import get_target
from rx_magic.transport.ssh import HostSettings, known_host_keys


def public(path: Path) -> tuple[str, str]:
    kind, data = Path(f"{path}.pub" if not str(path).endswith(".pub") else path).read_text().split()[:2]
    return kind, data


def new_key(path: Path, kind: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def two_key_sshd(tmp_path_factory):
    """A real sshd offering an ed25519 and an ECDSA host key."""
    root = tmp_path_factory.mktemp("sshd-two-keys")
    ecdsa = root / "host_key_ecdsa"
    if sshd_available():
        new_key(ecdsa, "ecdsa")
    server = start_for_tests(root, extra_config=[f"HostKey {ecdsa}"])     # skips without OpenSSH
    server.ecdsa_key = ecdsa
    yield server
    server.stop()


@pytest.fixture
def two_key_target(two_key_sshd, tmp_path_factory, monkeypatch, configure_targets, remote_workdir):
    """HOME for the two-key server (alias ``rxtest``, empty known_hosts); ``two_key_target(**keys)`` sets target ``ws``."""
    home = tmp_path_factory.mktemp("home")
    two_key_sshd.ssh_config(home, known=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def configure(**keys):
        configure_targets(ws={"host": "rxtest", "python": sys.executable, "workdir": str(remote_workdir), **keys})
        return home / ".ssh" / "known_hosts"

    configure()
    return configure


def host_line(name: str, key: Path, marker: str = "") -> str:
    kind, data = public(key)
    return " ".join(filter(None, [marker, name, kind, data])) + "\n"


def connects(name="ws"):
    """Connect to the target and run a command there; the connection's ``ConnectionInfo``.

    (Whether jobs then run is tests/test_ssh_target.py's business: here only the connection matters.)
    """
    transport = get_target(name).transport
    info = transport.connect()
    assert transport.run(["echo", "connected"]).stdout == "connected\n"
    return info


def refusal(ip, line="ws") -> str:
    result = run_remote(ip, line, "y = 1")
    assert isinstance(result.error_in_exec, ConnectError), result.error_in_exec
    assert "y" not in ip.user_ns
    return str(result.error_in_exec)


def assert_nothing_submitted(workdir):
    assert not Path(workdir).exists() or not list(Path(workdir).glob("rx-*"))
    assert rx_magic.jobs() == []


# ----------------------------------------------------------------------------- the key types asked for

@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_host_known_only_by_its_ecdsa_key_proves_itself_with_that_key(two_key_sshd, two_key_target, policy):
    known_hosts = two_key_target(host_key_policy=policy)
    name = f"[127.0.0.1]:{two_key_sshd.port}"
    known_hosts.write_text(host_line(name, two_key_sshd.ecdsa_key))
    info = connects()
    assert info.server_key.get_name() == "ecdsa-sha2-nistp256"
    assert info.server_key.fingerprint == fingerprint(Path(f"{two_key_sshd.ecdsa_key}.pub"))
    assert info.host_key == "known"
    assert known_hosts.read_text() == host_line(name, two_key_sshd.ecdsa_key)     # nothing added


def test_host_known_by_a_hashed_ecdsa_line_proves_itself_with_that_key(two_key_sshd, two_key_target):
    known_hosts = two_key_target()
    scanned = subprocess.run(["ssh-keyscan", "-H", "-t", "ecdsa", "-p", str(two_key_sshd.port), "127.0.0.1"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    assert scanned.startswith("|1|") and "ecdsa-sha2-nistp256" in scanned
    known_hosts.write_text(scanned)
    assert connects().server_key.get_name() == "ecdsa-sha2-nistp256"


def test_changed_ecdsa_key_is_refused_naming_both_ecdsa_fingerprints(ip, two_key_sshd, two_key_target, tmp_path,
                                                                      remote_workdir):
    # known_hosts holds another ECDSA key: the host is asked for ECDSA, and its ECDSA key does not match
    known_hosts = two_key_target(host_key_policy="accept-new")
    impostor = new_key(tmp_path / "old_ecdsa", "ecdsa")
    name = f"[127.0.0.1]:{two_key_sshd.port}"
    known_hosts.write_text(host_line(name, impostor))
    message = refusal(ip)
    assert f"the host key of {name} has CHANGED" in message
    assert fingerprint(Path(f"{two_key_sshd.ecdsa_key}.pub")) in message
    assert fingerprint(Path(f"{impostor}.pub")) in message
    assert fingerprint(two_key_sshd.root / "host_key.pub") not in message      # its ed25519 key was not asked for
    assert f"{known_hosts} line 1" in message
    assert known_hosts.read_text() == host_line(name, impostor)
    assert_nothing_submitted(remote_workdir)


# ----------------------------------------------------------------------------- a host without the known key type

@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_host_that_no_longer_offers_the_known_key_type_is_refused_as_changed(ip, sshd, ssh_target, ssh_home, tmp_path,
                                                                               remote_workdir, policy):
    # the shared sshd has only an ed25519 key; known_hosts holds an ECDSA key for it (OpenSSH: HOST
    # IDENTIFICATION HAS CHANGED). accept-new must not add the ed25519 key; strict must not call it unknown.
    ssh_target(host_key_policy=policy)
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    old = new_key(tmp_path / "old_ecdsa", "ecdsa")
    name = f"[127.0.0.1]:{sshd.port}"
    known_hosts.write_text(host_line(name, old))
    message = refusal(ip)
    assert f"the host key of {name} has CHANGED" in message
    assert "is not known" not in message
    assert f"ssh-ed25519 {fingerprint(sshd.root / 'host_key.pub')}" in message
    assert f"ecdsa-sha2-nistp256 {fingerprint(Path(f'{old}.pub'))} ({known_hosts} line 1)" in message
    assert f"`ssh-keygen -R {shlex.quote(name)} -f {shlex.quote(str(known_hosts))}`" in message
    assert known_hosts.read_text() == host_line(name, old)
    assert_nothing_submitted(remote_workdir)


def test_the_advised_ssh_keygen_line_removes_the_old_key_and_accept_new_then_records_the_new(
        ip, sshd, ssh_target, ssh_home, tmp_path):
    # the file named is the one the alias reads: ~/.ssh/config's UserKnownHostsFile lists two, the key is in the second
    config = ssh_home / ".ssh" / "config"
    first, second = ssh_home / ".ssh" / "known_hosts", ssh_home / ".ssh" / "known_hosts_cluster"
    config.write_text(config.read_text().replace(f"UserKnownHostsFile {first}", f"UserKnownHostsFile {first} {second}"))
    first.write_text("")
    old = new_key(tmp_path / "old_ecdsa", "ecdsa")
    name = f"[127.0.0.1]:{sshd.port}"
    second.write_text("# the cluster's keys\n" + host_line("example.org", old) + host_line(name, old))
    ssh_target(host_key_policy="accept-new")
    message = refusal(ip)
    assert f"({second} line 3)" in message
    command = message.split("`ssh-keygen ")[1].split("`")[0]
    assert command == f"-R {shlex.quote(name)} -f {shlex.quote(str(second))}"
    subprocess.run(["ssh-keygen", *shlex.split(command)], check=True, capture_output=True, timeout=30)
    assert name not in second.read_text() and "example.org" in second.read_text()
    assert connects().host_key == "recorded"
    assert first.read_text() == sshd.known_hosts_line()


# ----------------------------------------------------------------------------- markers and odd lines

def test_cert_authority_revoked_and_malformed_lines_do_not_stop_a_known_host(sshd, ssh_target, ssh_home, tmp_path):
    other = new_key(tmp_path / "other", "ed25519")
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    known_hosts.write_text("".join([
        "# keys\n",
        host_line("*.example.org", other, "@cert-authority"),
        host_line("retired.example.org", other, "@revoked"),
        host_line("somewhere", other, "@unknown-marker"),
        "not-a-key-line\n",
        "host ssh-ed25519 !!!notbase64\n",
        "\n",
        sshd.known_hosts_line(),
    ]))
    assert connects().host_key == "known"


@pytest.mark.parametrize("policy", ["strict", "accept-new"])
def test_revoked_host_key_is_refused_naming_the_line(ip, sshd, ssh_target, ssh_home, remote_workdir, policy):
    ssh_target(host_key_policy=policy)
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    name = f"[127.0.0.1]:{sshd.port}"
    lines = [sshd.known_hosts_line(), host_line("*", sshd.root / "host_key", "@revoked")]
    known_hosts.write_text("".join(lines))
    message = refusal(ip)
    assert f"the host key of {name} is REVOKED" in message
    assert fingerprint(sshd.root / "host_key.pub") in message
    assert f"{known_hosts} line 2" in message
    assert known_hosts.read_text() == "".join(lines)
    assert_nothing_submitted(remote_workdir)


def test_unknown_host_with_only_a_cert_authority_line_is_refused_saying_certificates_are_not_checked(
        ip, sshd, ssh_target, ssh_home, tmp_path):
    ca = new_key(tmp_path / "ca", "ed25519")
    (ssh_home / ".ssh" / "known_hosts").write_text(host_line("[127.0.0.1]:*", ca, "@cert-authority"))
    message = refusal(ip)
    assert "is not known" in message
    assert "@cert-authority" in message and "does not check host certificates" in message


def test_accept_new_records_a_host_known_only_by_another_hosts_and_a_ca_key(sshd, ssh_target, ssh_home, tmp_path):
    other = new_key(tmp_path / "other", "ecdsa")
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    before = host_line("example.org", other) + host_line("[127.0.0.1]:*", other, "@cert-authority")
    known_hosts.write_text(before.rstrip("\n"))         # a file whose last line has no newline
    ssh_target(host_key_policy="accept-new")
    assert connects().host_key == "recorded"
    assert known_hosts.read_text() == before + sshd.known_hosts_line()


# ----------------------------------------------------------------------------- reading known_hosts

def settings(name: str, port: int, *files: Path) -> HostSettings:
    return HostSettings(alias=name, hostname=name, port=port, user="me", identity_files=(), identities_only=False,
                        proxy_jump=None, known_hosts_files=tuple(map(str, files)))


def test_known_hosts_names_match_as_openssh_matches_them(tmp_path):
    key = new_key(tmp_path / "k", "ed25519")
    path = tmp_path / "known_hosts"
    path.write_text("".join([
        host_line("gadi.nci.org.au,gadi", key),                 # line 1: port 22 is written without brackets
        host_line("*.nci.org.au,!bad.nci.org.au", key),         # line 2: wildcards and a negation
        host_line("[gadi.nci.org.au]:2222", key),               # line 3: another port
        host_line("GADI-DATA.nci.org.au", key),                 # line 4: names match whatever their case
    ]))
    lines = lambda name, port: [entry.line for entry in known_host_keys(settings(name, port, path))]
    assert lines("gadi.nci.org.au", 22) == [1, 2]
    assert lines("gadi", 22) == [1]
    assert lines("gadi.nci.org.au", 2222) == [3]
    assert lines("gadi-data.nci.org.au", 22) == [2, 4]
    assert lines("bad.nci.org.au", 22) == []
    assert lines("elsewhere", 22) == []


def test_hashed_known_hosts_names_match(tmp_path):
    key = new_key(tmp_path / "k", "ed25519")
    path = tmp_path / "known_hosts"
    path.write_text(host_line("gadi.nci.org.au", key) + host_line("[gadi.nci.org.au]:2222", key))
    subprocess.run(["ssh-keygen", "-H", "-f", str(path)], check=True, capture_output=True, timeout=30)
    assert all(line.startswith("|1|") for line in path.read_text().splitlines())
    lines = lambda name, port: [entry.line for entry in known_host_keys(settings(name, port, path))]
    assert lines("gadi.nci.org.au", 22) == [1]
    assert lines("gadi.nci.org.au", 2222) == [2]
    assert lines("gadi.nci.org.au", 2200) == []
    entry = known_host_keys(settings("gadi.nci.org.au", 22, path))[0]
    assert (entry.key_type, entry.fingerprint, entry.marker) == ("ssh-ed25519", fingerprint(Path(f"{key}.pub")), "")


def test_the_advised_ssh_command_for_an_unknown_host_records_its_key_where_rx_magic_reads_it(
        ip, sshd, ssh_target, ssh_home):
    # the alias's known_hosts is not ~/.ssh/known_hosts: the advice must write to the alias's own file
    config = ssh_home / ".ssh" / "config"
    own = ssh_home / ".ssh" / "known_hosts_rxtest"
    config.write_text(config.read_text().replace(f"UserKnownHostsFile {ssh_home / '.ssh' / 'known_hosts'}",
                                                 f"UserKnownHostsFile {own}"))
    message = refusal(ip)
    assert "is not known" in message
    advised = shlex.split(message.split("connecting once with `")[1].split("`")[0])
    assert advised[0] == "ssh" and advised[-1] == "rxtest"
    # "answering yes", done by accept-new; -F: ssh reads the passwd entry's home, not $HOME
    subprocess.run([*advised[:-1], "-F", str(config), "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes",
                    advised[-1], "true"], check=True, capture_output=True, timeout=30)
    assert own.read_text().strip()
    assert connects().host_key == "known"


def test_accept_new_hashes_the_name_it_records_when_ssh_config_says_hash_known_hosts(ip, sshd, ssh_target, ssh_home):
    config = ssh_home / ".ssh" / "config"
    config.write_text(config.read_text().replace("Host rxtest\n", "Host rxtest\n    HashKnownHosts yes\n", 1))
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    known_hosts.write_text("")
    ssh_target(host_key_policy="accept-new")
    assert connects().host_key == "recorded"
    recorded = known_hosts.read_text()
    assert recorded.startswith("|1|") and "127.0.0.1" not in recorded
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known_hosts)],
                           capture_output=True, text=True, timeout=30)
    assert found.returncode == 0 and sshd.known_hosts_line().split()[2] in found.stdout   # OpenSSH finds it
    get_target("ws").transport.close()
    assert connects().host_key == "known"
