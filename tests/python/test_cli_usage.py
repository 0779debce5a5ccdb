"""The `picklewire` command as a new user meets it: --version, units, usage errors, JSON output."""
import json
import re
import socket
import threading

import pytest

from conftest import run_cli

pytestmark = pytest.mark.usefixtures("cli")


def test_version_is_the_project_version(build_dir):
    r = run_cli(["--version"])
    assert r.returncode == 0
    # One source: CMakeLists.txt's project() version, also picklewire.__version__.
    version = re.search(r"^CMAKE_PROJECT_VERSION:STATIC=(.+)$", (build_dir / "CMakeCache.txt").read_text(), re.M)
    assert version
    assert r.stdout.strip() == f"picklewire {version.group(1)}"
    import picklewire

    assert picklewire.__version__ == version.group(1)


@pytest.mark.parametrize(
    "args",
    [
        ["nonsense-subcommand"],
        ["bench", "shm://x"],  # --size missing
        ["bench", "shm://x", "--size", "lots"],
        ["bench", "tcp://127.0.0.1", "--size", "100"],  # no port
        ["bench", "tcp://127.0.0.1:70000", "--size", "100"],
        ["bench", "inproc://x", "--size", "100"],
        ["bench", "shm://x", "--size", "100", "--compress"],
        ["send", "shm://x", "/dev/null", "--compress"],
    ],
)
def test_usage_errors_exit_2_with_one_clear_line(args):
    r = run_cli(args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "stoi" not in r.stderr and "terminate" not in r.stderr
    assert "picklewire: picklewire:" not in r.stderr
    assert "--help" in r.stderr


def test_unknown_transport_says_its_prefix_once(tmp_path):
    f = tmp_path / "p.pkl"
    f.write_bytes(b"\x80\x05N.")
    r = run_cli(["send", "bogus://x", f])
    assert r.returncode == 1
    assert r.stderr.count("picklewire:") == 1, r.stderr
    assert "unknown transport 'bogus'" in r.stderr


def test_bench_accepts_size_units_and_prints_valid_json(url_for, tmp_path):
    url = url_for("shm", "units")
    r = run_cli(["bench", url, "--size", "1MiB", "--count", "5", "--json"])
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["size"] == 1 << 20
    assert report["count"] == 5
    # The sender's ledger in the same layout as --stats: one copy-in per payload message.
    assert report["sender"]["side"] == "sender"
    assert report["sender"]["copied_bytes"]["copied_into_segment"] >= 5 << 20


def test_bench_json_escapes_a_url_with_a_quote(tmp_path):
    url = f'ipc://{tmp_path}/a"b'
    r = run_cli(["bench", url, "--size", "64", "--count", "3", "--json"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["url"] == url


def test_bench_refuses_a_reply_port_someone_else_listens_on():
    # Something unrelated listens on PORT+1: bench must refuse before its receiver connects there.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1] - 1
    got = []

    def accept():
        listener.settimeout(5)
        try:
            conn, _ = listener.accept()
            conn.settimeout(1)
            got.append(conn.recv(4096))
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    try:
        r = run_cli(["bench", f"tcp://127.0.0.1:{port}", "--size", "100", "--count", "3"])
    finally:
        t.join()
        listener.close()
    assert r.returncode == 1
    assert "already has a listener" in r.stderr
    assert not any(got), "bench wrote into an unrelated listener"


def test_bench_shows_progress_on_a_terminal_only(url_for, cli):
    import shutil
    import subprocess

    if not shutil.which("script"):
        pytest.skip("util-linux `script` (a pseudo-terminal) is not installed")
    url = url_for("shm", "progress")
    # On a terminal (script gives the command a pseudo-terminal): a progress line.
    tty = subprocess.run(["script", "-qec", f"{cli} bench {url} --size 4KiB --count 2000", "/dev/null"],
                         capture_output=True, timeout=120)
    assert tty.returncode == 0, tty.stdout
    assert b"bench: sent" in tty.stdout and b"messages/s" in tty.stdout
    # Not a terminal, or --quiet: none.
    piped = run_cli(["bench", url, "--size", "4KiB", "--count", "2000"])
    assert piped.returncode == 0 and "bench: sent" not in piped.stderr
    quiet = subprocess.run(["script", "-qec", f"{cli} bench {url} --size 4KiB --count 2000 --quiet", "/dev/null"],
                           capture_output=True, timeout=120)
    assert quiet.returncode == 0 and b"bench: sent" not in quiet.stdout


@pytest.mark.parametrize("args", [
    ["recv", "shm://x", "--timeout", "-1"],
    ["send", "shm://x", "/dev/null", "--timeout", "-1"],
    ["recv", "tcp://127.0.0.1:5999", "--capacity", "1MiB"],
])
def test_negative_timeouts_and_misplaced_capacity_are_usage_errors(args):
    r = run_cli(args)
    assert r.returncode == 2, (r.returncode, r.stderr)


def test_recv_capacity_sizes_the_channel_and_timeout_ends_an_idle_wait(url_for):
    import picklewire

    url = url_for("shm", "capacity")
    # --capacity sizes the shm channel: a sender sees it in its stats.
    import subprocess
    import time

    from conftest import CLI

    cli = subprocess.Popen([str(CLI), "recv", url, "--capacity", "3MiB", "--timeout", "1", "--count", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 20
        while True:
            try:
                tx = picklewire.Sender.connect(url)
                break
            except picklewire.TransportError:
                assert time.monotonic() < end, "recv never bound its channel"
                time.sleep(0.05)
        assert tx.stats()["capacity"] == 3 << 20
        tx.close()
        # Nothing is sent: --timeout 1 ends the idle wait and the command exits 0.
        assert cli.wait(30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
