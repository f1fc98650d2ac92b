"""A --map's elements pulled together: what the notebook reads of each element's results comes in a few
requests (one round trip each over SSH), not one request per element. Through the loopback sshd (real
OpenSSH, tests/sshd.py): the transport's own read_files is counted, not replaced."""

from helpers import run_remote

from rx_magic.targets.target import get_target


def test_a_map_over_ssh_pulls_its_elements_results_in_a_request_per_fifty_elements(ip, ssh_target, monkeypatch):
    transport = get_target("ws").transport
    asked = []
    read_files = transport.read_files

    def counted(paths, limit=None):
        paths = list(paths)
        if any("/elements/" in path and path.endswith("outputs.dill") for path in paths):
            asked.append(paths)
        return read_files(paths, limit)
    monkeypatch.setattr(transport, "read_files", counted)
    result = run_remote(ip, "ws --no-hold --map n=range(60)", """
        square = n * n
        if n == 7:
            print("seven")
    """)
    assert result.error_in_exec is None
    assert ip.user_ns["square"] == [n * n for n in range(60)]
    assert len(asked) == 2      # elements 0-49, then 50-59: every element's results, each pulled once
    assert sum(1 for paths in asked for path in paths if path.endswith("outputs.dill")) == 60
