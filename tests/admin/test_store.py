"""Persisting applied and deleted objects: one file per object, documents cut out of other files, atomic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy.config import store
from proxy.config.load import load_paths, load_text
from tests.paths import BOOKINFO_NET, ROOT

VS_V1 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"""

VS_V3 = VS_V1.replace("subset: v1", "subset: v3")

MULTI = """\
# bookinfo routes, kept by hand
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
spec:
  hosts: [productpage]   # the front page
  http:
  - route:
    - destination: {host: productpage, subset: v1}
---
# reviews: being migrated
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings, subset: v1}
"""


def applied(text: str, filename: str = "vs.yaml") -> list:
    result = load_text(text, filename)
    assert not result.errors
    return result.objects


def apply(directory: Path, text: str, paths: list[str] | None = None) -> store.Plan:
    current = load_paths(paths or [str(directory)])
    assert not current.errors, current.errors
    plan = store.plan_apply(str(directory), current.objects, applied(text))
    store.commit(plan.changes)
    return plan


def keys_and_files(paths: list[str]) -> dict[tuple[str, str, str], str]:
    loaded = load_paths(paths)
    assert not loaded.errors, [str(e) for e in loaded.errors]
    return {o.key: os.path.basename(o.file) for o in loaded.objects}


def test_new_object_gets_its_own_file_and_reads_back_the_same(tmp_path: Path) -> None:
    plan = apply(tmp_path, VS_V1)
    assert [r for _, r in plan.results] == ["created"]
    assert os.listdir(tmp_path) == ["virtualservice-default-reviews.yaml"]
    loaded = load_paths([str(tmp_path)])
    (obj,) = loaded.objects
    assert obj.key == ("VirtualService", "default", "reviews")
    assert obj.spec == applied(VS_V1)[0].spec
    assert obj.body["metadata"]["namespace"] == "default"
    assert plan.stored[0].file.endswith("virtualservice-default-reviews.yaml")


def test_same_object_again_is_unchanged_and_writes_nothing(tmp_path: Path) -> None:
    apply(tmp_path, VS_V1)
    before = (tmp_path / "virtualservice-default-reviews.yaml").stat().st_mtime_ns
    # the same object written in other YAML
    plan = apply(tmp_path, VS_V1.replace("hosts: [reviews]", "hosts:\n  - reviews"))
    assert [r for _, r in plan.results] == ["unchanged"]
    assert plan.changes == []
    assert (tmp_path / "virtualservice-default-reviews.yaml").stat().st_mtime_ns == before


def test_changed_object_is_configured_in_place(tmp_path: Path) -> None:
    apply(tmp_path, VS_V1)
    plan = apply(tmp_path, VS_V3)
    assert [r for _, r in plan.results] == ["configured"]
    (obj,) = load_paths([str(tmp_path)]).objects
    assert obj.spec["http"][0]["route"][0]["destination"]["subset"] == "v3"


def test_applying_an_object_from_a_multi_document_file_cuts_it_out_of_that_file(tmp_path: Path) -> None:
    user_file = tmp_path / "routes.yaml"
    user_file.write_text(MULTI)
    plan = apply(tmp_path, VS_V3)
    assert [r for _, r in plan.results] == ["configured"]
    # the other documents keep their text byte for byte, comments included
    start = MULTI.index("---\n# reviews")
    end = MULTI.index("---\napiVersion", start + 4)
    assert user_file.read_text() == MULTI[:start] + MULTI[end:]
    files = keys_and_files([str(tmp_path)])  # no "already defined" error: one definition each
    assert files == {
        ("VirtualService", "default", "productpage"): "routes.yaml",
        ("VirtualService", "default", "ratings"): "routes.yaml",
        ("VirtualService", "default", "reviews"): "virtualservice-default-reviews.yaml",
    }


def test_first_document_of_a_file_keeps_the_file_header(tmp_path: Path) -> None:
    user_file = tmp_path / "routes.yaml"
    user_file.write_text(MULTI)
    current = load_paths([str(tmp_path)])
    target = applied(MULTI)[0]  # productpage, the first document
    store.commit(store.plan_delete(current.objects, [target]).changes)
    text = user_file.read_text()
    assert text.startswith("# bookinfo routes, kept by hand\n---\n# reviews: being migrated\n")
    assert "productpage" not in text
    assert set(keys_and_files([str(tmp_path)])) == {("VirtualService", "default", "reviews"),
                                                    ("VirtualService", "default", "ratings")}


def test_deleting_every_document_of_a_file_removes_the_file(tmp_path: Path) -> None:
    user_file = tmp_path / "routes.yaml"
    user_file.write_text(MULTI)
    (tmp_path / "other.yaml").write_text(VS_V1.replace("name: reviews", "name: details"))
    current = load_paths([str(tmp_path)])
    plan = store.plan_delete(current.objects, applied(MULTI))
    assert [r for _, r in plan.results] == ["deleted", "deleted", "deleted"]
    store.commit(plan.changes)
    assert sorted(os.listdir(tmp_path)) == ["other.yaml"]


def test_delete_of_a_missing_object_is_not_found_and_changes_nothing(tmp_path: Path) -> None:
    apply(tmp_path, VS_V1)
    current = load_paths([str(tmp_path)])
    plan = store.plan_delete(current.objects, applied(VS_V1.replace("name: reviews", "name: nope")))
    assert [r for _, r in plan.results] == ["not found"]
    assert plan.changes == [] and len(plan.objects) == 1


def test_a_file_outside_the_store_directory_is_rewritten_too(tmp_path: Path) -> None:
    store_dir, user_dir = tmp_path / "applied", tmp_path / "user"
    store_dir.mkdir()
    user_dir.mkdir()
    (user_dir / "routes.yaml").write_text(MULTI)
    paths = [str(store_dir), str(user_dir)]
    apply(store_dir, VS_V3, paths)
    files = keys_and_files(paths)
    assert files[("VirtualService", "default", "reviews")] == "virtualservice-default-reviews.yaml"
    assert "name: reviews" not in (user_dir / "routes.yaml").read_text()


def test_non_istio_documents_keep_a_file_alive(tmp_path: Path) -> None:
    text = VS_V1 + "---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews}\n"
    (tmp_path / "mixed.yaml").write_text(text)
    current = load_paths([str(tmp_path)])
    store.commit(store.plan_delete(current.objects, applied(VS_V1)).changes)
    service = "---\napiVersion: v1\nkind: Service\nmetadata: {name: reviews}\n"
    assert (tmp_path / "mixed.yaml").read_text() == service


def test_seed_file_round_trips_through_the_store(tmp_path: Path) -> None:
    text = (BOOKINFO_NET / "virtual-service-all-v1.yaml").read_text()
    plan = apply(tmp_path, text)
    assert [r for _, r in plan.results] == ["created"] * 4
    loaded = load_paths([str(tmp_path)])
    assert {o.key: o.spec for o in loaded.objects} == {o.key: o.spec for o in applied(text)}


def test_first_config_path_must_be_a_directory(tmp_path: Path) -> None:
    single = tmp_path / "config.yaml"
    single.write_text(VS_V1)
    with pytest.raises(store.StoreError) as info:
        store.store_dir([str(single)])
    assert info.value.status == 409
    assert f"config path {single} is a file, not a directory" in str(info.value)


def test_no_temp_file_is_left_behind(tmp_path: Path) -> None:
    (tmp_path / "routes.yaml").write_text(MULTI)
    apply(tmp_path, VS_V3)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


# read-only directories: root ignores file modes, so the check runs in a child without CAP_DAC_OVERRIDE

READ_ONLY_CHILD = textwrap.dedent("""
    import os, sys
    from proxy.config import store
    from proxy.config.load import load_paths, load_text
    writable, read_only = sys.argv[1], sys.argv[2]
    try:
        store.store_dir([read_only])
        print("store_dir: accepted")
    except store.StoreError as exc:
        print(f"store_dir: {exc.status} {exc}")
    # one change in a writable directory, one in the read-only one: neither may happen
    current = load_paths([writable, read_only])
    vs = load_text(sys.argv[3], "vs.yaml").objects
    plan = store.plan_apply(writable, current.objects, vs)
    try:
        store.commit(plan.changes)
        print("commit: done")
    except store.StoreError as exc:
        print(f"commit: {exc.status} {exc}")
""")


def _unprivileged() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot drop the capability to ignore file modes")
    return [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps=-all"]


def test_read_only_directory_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    writable, read_only = tmp_path / "applied", tmp_path / "mounted"
    writable.mkdir()
    read_only.mkdir()
    (read_only / "routes.yaml").write_text(MULTI)
    (writable / "keep.yaml").write_text(VS_V1.replace("name: reviews", "name: details"))
    before = {p: p.read_bytes() for p in (read_only / "routes.yaml", writable / "keep.yaml")}
    read_only.chmod(0o555)
    (read_only / "routes.yaml").chmod(0o444)
    try:
        out = subprocess.run([*_unprivileged(), sys.executable, "-c", READ_ONLY_CHILD, str(writable),
                              str(read_only), VS_V3], capture_output=True, text=True, cwd=ROOT, timeout=30)
    finally:
        read_only.chmod(0o755)
    assert out.returncode == 0, out.stderr
    message = f"config directory {read_only} is read-only: cannot persist applied objects"
    assert f"store_dir: 409 {message}" in out.stdout
    assert f"commit: 409 config directory {read_only} is read-only" in out.stdout
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(os.listdir(writable)) == ["keep.yaml"]  # the new file was not written either
