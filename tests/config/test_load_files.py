"""Reading config files: every failure is a diagnostic naming the file, never an exception; a 0-byte
file is "not written yet"; a file over the size limit is refused before it is parsed; nothing is kept
from one load to the next."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

from proxy.config.load import load_paths
from tests.admin.test_store import _unprivileged
from tests.paths import BOOKINFO_NET, ROOT

VS = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""


def test_empty_file_keeps_the_objects_it_had(tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text(VS)
    first = load_paths([str(tmp_path)])
    assert [o.name for o in first.objects] == ["reviews"]
    f.write_bytes(b"")  # an editor truncated it and has not written yet
    previous = {str(f): first.objects}
    second = load_paths([str(tmp_path)], previous=previous)
    assert not second.errors
    assert [o.name for o in second.objects] == ["reviews"]
    assert second.notices == [f"{f}: empty file (0 bytes), taken as not written yet: "
                              "keeping its 1 object(s) until it has content"]
    # still empty on the next load: still kept (the previous load is now the second)
    third = load_paths([str(tmp_path)], previous={str(f): second.objects})
    assert [o.name for o in third.objects] == ["reviews"]


def test_empty_file_with_nothing_before_has_no_objects(tmp_path: Path) -> None:
    (tmp_path / "new.yaml").write_bytes(b"")
    loaded = load_paths([str(tmp_path)])
    assert not loaded.objects and not loaded.errors
    assert loaded.notices == [f"{tmp_path / 'new.yaml'}: empty file (0 bytes), taken as not written yet: "
                              "no objects yet"]


def test_a_file_with_only_comments_is_empty_config_not_unwritten(tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text(VS)
    first = load_paths([str(tmp_path)])
    f.write_text("# routes removed\n")
    second = load_paths([str(tmp_path)], previous={str(f): first.objects})
    assert second.objects == [] and not second.errors


def test_deleted_file_deletes_its_objects(tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text(VS)
    first = load_paths([str(tmp_path)])
    f.unlink()
    second = load_paths([str(tmp_path)], previous={str(f): first.objects})
    assert second.objects == [] and not second.errors and second.files == []


def test_a_named_file_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    loaded = load_paths([str(tmp_path / "nope.yaml")])
    assert [str(e) for e in loaded.errors] == [f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"]


def test_non_utf8_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "latin1.yaml"
    f.write_bytes(VS.replace("name: reviews}", "name: reviews}  # caf\xe9").encode("latin-1"))
    loaded = load_paths([str(tmp_path)])
    assert loaded.objects == []
    assert [str(e) for e in loaded.errors] == [
        f"{f}:3: not UTF-8: byte 0xe9 at offset {VS.index('}') + 8} (YAML config must be UTF-8 text)"]


def test_file_over_the_limit_is_refused_without_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(VS + "#" * 3000 + "\n")
    (tmp_path / "ok.yaml").write_text(VS.replace("reviews}", "ratings}"))
    loaded = load_paths([str(tmp_path)], max_bytes=2048)
    assert [o.name for o in loaded.objects] == ["ratings"]
    assert big.stat().st_size == 3174
    assert [str(e) for e in loaded.errors] == [
        f"{big}: file is 3.1 KiB, over the limit of 2 KiB per config file (--max-config-bytes)"]
    assert not load_paths([str(big)], max_bytes=big.stat().st_size).errors  # the limit itself is allowed


CHILD = ("import sys\nfrom proxy.config.load import load_paths\n"
         "print([str(e) for e in load_paths([sys.argv[1]]).errors])")


def unprivileged_errors(path: Path) -> str:
    """load_paths' errors, from a child that honours file modes even when the tests run as root."""
    out = subprocess.run([*_unprivileged(), sys.executable, "-c", CHILD, str(path)], capture_output=True,
                         text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "secret.yaml"
    f.write_text(VS)
    f.chmod(0)
    assert unprivileged_errors(tmp_path) == f"{[f'{f}: cannot read: Permission denied']}\n"


def test_unlistable_directory_is_an_error_not_an_empty_config(tmp_path: Path) -> None:
    sub = tmp_path / "routes"
    sub.mkdir()
    (sub / "vs.yaml").write_text(VS)
    sub.chmod(0)
    try:
        errors = unprivileged_errors(tmp_path)
    finally:
        sub.chmod(0o755)
    assert errors == f"{[f'{sub}: cannot read directory: Permission denied']}\n"


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path) -> None:
    f = tmp_path / "deep.yaml"
    f.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    loaded = load_paths([str(f)])
    assert [e.reason for e in loaded.errors] == ["invalid YAML: nested too deeply"]


def test_messages_are_pyyaml_s_even_with_libyaml() -> None:
    from proxy.config.load import load_text

    result = load_text("a: 1\n\tb: 2\n", "f.yaml")
    assert [str(e) for e in result.errors] == ["f.yaml:2: invalid YAML: found character '\\t' that cannot "
                                               "start any token"]


def test_loading_again_and_again_keeps_nothing() -> None:
    """The loader must not keep what it built (PyYAML's constructor caches every object it makes)."""
    paths = [str(BOOKINFO_NET)]
    load_paths(paths)
    tracemalloc.start()
    try:
        load_paths(paths)
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            load_paths(paths)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # one load of these files builds ~1 MiB of objects; keeping them would grow by ~50 MiB
    assert grown < 256 * 1024, grown
