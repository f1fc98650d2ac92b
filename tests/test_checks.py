"""``%rx check``: the checklist against the built-in ``local`` target and a real OpenSSH sshd on loopback."""

import stat
import sys

from sshd import fingerprint

from rx_magic.targets.checks import FAIL, INFO, OK, check_target


def by_item(lines):
    """Each item's lines (an item may have more than one)."""
    found = {}
    for line in lines:
        found.setdefault(line.item, []).append(line)
    return found


def only(lines, item):
    [line] = by_item(lines)[item]
    return line


def failures(lines):
    return [line for line in lines if line.status == FAIL]


# ----------------------------------------------------------------------------- local


def test_local_target_passes_every_check_with_the_kernels_python():
    lines = check_target("local")
    assert failures(lines) == []
    items = by_item(lines)
    assert "host" not in items and "host key" not in items and "auth" not in items
    python = only(lines, "python")
    assert python.status == OK and sys.executable in python.found
    assert "%d.%d.%d" % sys.version_info[:3] in python.found
    for item in ("dill", "IPython", "matplotlib", "numpy", "scheduler commands", "workdir",
                 "workdir writable", "free space"):
        assert only(lines, item).status == OK, only(lines, item)
    assert "built in" in only(lines, "target").found
    for command in ("bash", "setsid", "ps", "kill"):
        assert command in only(lines, "scheduler commands").found


def test_check_magic_prints_the_checklist(ip, capsys):
    ip.run_line_magic("rx", "check local")
    out = capsys.readouterr().out
    assert out.startswith("rx_magic check of target 'local': no problems found")
    assert "ok    workdir writable" in out
    assert "FAIL" not in out


def test_unknown_target_fails_with_where_to_configure_it():
    lines = check_target("nowhere")
    [line] = failures(lines)
    assert line.item == "target" and "'nowhere' is not configured" in line.found and "local" in line.found
    assert "[targets.nowhere]" in line.fix and "targets.toml" in line.fix


# ----------------------------------------------------------------------------- ssh


def test_ssh_target_passes_every_check_and_reports_what_it_found(sshd, ssh_home, ssh_target, remote_workdir):
    config_file = ssh_target()
    lines = check_target("ws")
    assert failures(lines) == [], "\n".join(map(str, lines))
    assert str(config_file) in only(lines, "target").found
    assert only(lines, "transport").found == "ssh to rxtest"
    assert only(lines, "ssh config").found == str(ssh_home / ".ssh" / "config")
    host = only(lines, "host")
    assert f"user {sshd.user}, host 127.0.0.1, port {sshd.port}, no proxy" in host.found
    key = only(lines, "host key")
    assert key.status == OK and key.found.startswith("known:")
    assert fingerprint(sshd.root / "host_key.pub") in key.found
    assert only(lines, "auth").found == f"publickey ({sshd.user_key})"
    assert only(lines, "connect time").found.endswith(" s")
    assert only(lines, "python").status == OK
    assert "%d.%d" % sys.version_info[:2] in only(lines, "python").found
    workdir = remote_workdir
    assert only(lines, "workdir").found == f"{workdir} created (mode 0700)"
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert only(lines, "workdir writable").status == OK
    assert list(workdir.iterdir()) == []        # the probe file was removed
    assert only(lines, "free space").status == OK


def test_ssh_target_through_proxyjump_reports_the_proxy(sshd, ssh_target):
    ssh_target(host="rxjump")
    lines = check_target("ws")
    assert failures(lines) == [], "\n".join(map(str, lines))
    assert "ProxyJump rxtest" in only(lines, "host").found


def test_unknown_host_key_fails_with_its_fingerprint_and_how_to_trust_it(sshd, ssh_home, ssh_target):
    sshd.ssh_config(ssh_home, known=False)
    config_file = ssh_target()
    lines = check_target("ws")
    [key] = failures(lines)
    assert key.item == "host key" and key.found.startswith("unknown:")
    assert fingerprint(sshd.root / "host_key.pub") in key.found
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    assert f"UserKnownHostsFile={known_hosts} rxtest`" in key.fix     # the file rx_magic reads, not ssh's default
    assert 'host_key_policy = "accept-new"' in key.fix and str(config_file) in key.fix
    assert (ssh_home / ".ssh" / "known_hosts").read_text() == ""     # the check trusts nothing by itself
    skipped = [line for line in lines if line.found == "skipped: not connected"]
    assert {line.item for line in skipped} >= {"python", "dill", "workdir", "free space"}
    assert all(line.status == INFO for line in skipped)


def test_accept_new_records_an_unknown_host_key(sshd, ssh_home, ssh_target):
    sshd.ssh_config(ssh_home, known=False)
    ssh_target(host_key_policy="accept-new")
    lines = check_target("ws")
    assert failures(lines) == []
    assert "recorded in" in only(lines, "host key").found
    assert sshd.known_hosts_line().split()[2] in (ssh_home / ".ssh" / "known_hosts").read_text()


def test_changed_host_key_fails_and_says_how_to_remove_the_old_one(sshd, ssh_home, ssh_target):
    impostor = (sshd.root / "id_other.pub").read_text().split()
    (ssh_home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{sshd.port} {impostor[0]} {impostor[1]}\n")
    ssh_target()
    [key] = failures(check_target("ws"))
    assert key.item == "host key" and "CHANGED" in key.found
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in key.fix


def test_cert_authority_and_revoked_lines_do_not_hide_a_known_key(sshd, ssh_home, ssh_target):
    other = (sshd.root / "id_other.pub").read_text().split()
    name = f"[127.0.0.1]:{sshd.port}"
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    known_hosts.write_text(f"@cert-authority *.example.org {other[0]} {other[1]}\n"
                           f"@revoked {name} {other[0]} {other[1]}\n" + known_hosts.read_text())
    ssh_target()
    lines = check_target("ws")
    assert failures(lines) == []
    assert only(lines, "host key").found.startswith("known:")


def test_a_revoked_host_key_fails_the_check(sshd, ssh_home, ssh_target):
    known_hosts = ssh_home / ".ssh" / "known_hosts"
    genuine = sshd.known_hosts_line().strip()
    known_hosts.write_text(f"@revoked {genuine}\n{genuine}\n")
    ssh_target()
    [key] = failures(check_target("ws"))
    assert key.item == "host key" and "REVOKED" in key.found


def test_refused_key_fails_auth_naming_the_key_tried(sshd, ssh_home, ssh_target):
    config = ssh_home / ".ssh" / "config"
    config.write_text(config.read_text().replace(f"IdentityFile {sshd.user_key}", f"IdentityFile {sshd.other_key}"))
    ssh_target()
    lines = check_target("ws")
    [auth] = failures(lines)
    assert auth.item == "auth" and str(sshd.other_key) in auth.found
    assert "authorized_keys" in auth.fix and "identity_file" in auth.fix
    assert only(lines, "host key").status == OK
    assert only(lines, "python").found == "skipped: not connected"


def test_missing_python_fails_naming_it_and_later_checks_still_run(sshd, ssh_target):
    ssh_target(python="/opt/nowhere/bin/python3.11")
    lines = check_target("ws")
    [python] = failures(lines)
    assert python.item == "python" and "'/opt/nowhere/bin/python3.11' did not run" in python.found
    assert "No such file" in python.found and "python" in python.fix
    assert only(lines, "dill").found == "skipped: the target's python did not run"
    for item in ("scheduler commands", "workdir", "workdir writable", "free space"):
        assert only(lines, item).status == OK, only(lines, item)


def test_unreachable_port_fails_the_connection_and_skips_the_remote_checks(ssh_target, remote_workdir):
    from sshd import free_port
    ssh_target(host="127.0.0.1", port=free_port())
    lines = check_target("ws")
    [connection] = failures(lines)
    assert connection.item == "connection" and "cannot reach 127.0.0.1" in connection.found
    assert only(lines, "workdir").found == "skipped: not connected"
    assert not remote_workdir.exists()
