"""tests/layering_check.py itself: it must catch a violation, direct or through a header."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "tests" / "layering_check.py"


def run(root):
    return subprocess.run([sys.executable, str(CHECK), str(root)], capture_output=True, text=True)


def copy_tree(tmp_path):
    for d in ("include", "src", "transport", "tools", "python", "examples"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return tmp_path


def test_the_tree_follows_the_rule():
    r = run(ROOT)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_transport_file_including_the_codec_is_caught(tmp_path):
    root = copy_tree(tmp_path)
    f = root / "transport" / "endpoint.cpp"
    f.write_text('#include "picklewire/pickler.hpp"\n' + f.read_text())
    r = run(root)
    assert r.returncode == 1
    assert "transport file reaches include/picklewire/pickler.hpp: transport/endpoint.cpp" in r.stdout


def test_a_codec_reaching_a_transport_through_a_vocabulary_header_is_caught(tmp_path):
    root = copy_tree(tmp_path)
    f = root / "include" / "picklewire" / "ledger.hpp"
    f.write_text(f.read_text() + '\n#include "picklewire/endpoint.hpp"\n')
    r = run(root)
    assert r.returncode == 1
    assert "codec file reaches include/picklewire/endpoint.hpp" in r.stdout
    assert "vocabulary file reaches include/picklewire/endpoint.hpp" in r.stdout


def test_the_command_using_a_transport_internal_header_is_caught(tmp_path):
    root = copy_tree(tmp_path)
    f = root / "tools" / "shm_command.cpp"
    f.write_text('#include "../transport/shm/segment.hpp"\n' + f.read_text())
    r = run(root)
    assert r.returncode == 1
    assert "tools/shm_command.cpp includes the transport-internal transport/shm/segment.hpp" in r.stdout
