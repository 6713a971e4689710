"""Applied state: one file per applied object, deletion records for config objects, laid over the config;
the config paths are never written; all-or-nothing writes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy.config import store
from proxy.config.load import load_text
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


def applied(text: str, filename: str = "vs.yaml", namespace: str = "default") -> list:
    result = load_text(text, filename, default_namespace=namespace)
    assert not result.errors
    return result.objects


def dirs(tmp_path: Path) -> tuple[Path, Path]:
    config, state = tmp_path / "config", tmp_path / "state"
    config.mkdir(exist_ok=True)
    return config, state


def load(config: Path, state: Path) -> store.Loaded:
    loaded = store.load_config([str(config)], str(state))
    assert not loaded.served.errors, [str(e) for e in loaded.served.errors]
    return loaded


def apply(config: Path, state: Path, text: str, namespace: str = "default") -> store.Plan:
    plan = store.plan_apply(load(config, state), applied(text, namespace=namespace))
    store.commit(plan.changes, str(state))
    return plan


def delete(config: Path, state: Path, text: str) -> store.Plan:
    plan = store.plan_delete(load(config, state), applied(text))
    store.commit(plan.changes, str(state))
    return plan


def served(config: Path, state: Path) -> dict[tuple[str, str, str], str]:
    """key -> the subset its first route goes to (or the file name for other kinds)."""
    out = {}
    for o in load(config, state).served.objects:
        routes = o.spec.get("http") or []
        out[o.key] = routes[0]["route"][0]["destination"]["subset"] if routes else os.path.basename(o.file)
    return out


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


REVIEWS = ("VirtualService", "default", "reviews")


def test_new_object_gets_its_own_file_in_the_state_directory(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    plan = apply(config, state, VS_V1)
    assert [r for _, r in plan.results] == ["created"]
    assert list(files(state)) == ["applied/virtualservice_default_reviews.yaml"]
    assert os.listdir(config) == []
    (obj,) = load(config, state).served.objects
    assert obj.key == REVIEWS
    assert obj.spec == applied(VS_V1)[0].spec
    assert obj.body["metadata"]["namespace"] == "default"
    assert plan.stored[0].file == str(state / "applied" / "virtualservice_default_reviews.yaml")


def test_same_object_again_is_unchanged_and_writes_nothing(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    apply(config, state, VS_V1)
    before = files(state)
    # the same object written in other YAML
    plan = apply(config, state, VS_V1.replace("hosts: [reviews]", "hosts:\n  - reviews"))
    assert [r for _, r in plan.results] == ["unchanged"]
    assert plan.changes == [] and files(state) == before


def test_changed_object_is_configured_in_place(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    apply(config, state, VS_V1)
    plan = apply(config, state, VS_V3)
    assert [r for _, r in plan.results] == ["configured"]
    assert served(config, state) == {REVIEWS: "v3"}


def test_applied_object_replaces_the_config_s_and_the_config_is_not_written(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    (config / "routes.yaml").write_text(MULTI)
    before = files(config)
    plan = apply(config, state, VS_V3)
    assert [r for _, r in plan.results] == ["configured"]
    assert files(config) == before
    assert served(config, state) == {("VirtualService", "default", "productpage"): "v1", REVIEWS: "v3",
                                     ("VirtualService", "default", "ratings"): "v1"}
    # editing the config file does not undo what was applied
    (config / "routes.yaml").write_text(MULTI.replace("subset: v1", "subset: v2"))
    assert served(config, state)[REVIEWS] == "v3"


def test_deleting_an_applied_object_removes_its_file(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    apply(config, state, VS_V1)
    plan = delete(config, state, VS_V1)
    assert [r for _, r in plan.results] == ["deleted"]
    assert files(state) == {} and served(config, state) == {}


def test_deleting_a_config_object_hides_it_until_applied_again(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    (config / "routes.yaml").write_text(MULTI)
    before = files(config)
    apply(config, state, VS_V3)  # applied over the config's, then deleted: both must go
    plan = delete(config, state, VS_V1)
    assert [r for _, r in plan.results] == ["deleted"]
    assert files(config) == before
    assert list(files(state)) == ["deleted/virtualservice_default_reviews.json"]
    assert REVIEWS not in served(config, state)
    assert load(config, state).state.summary()["deleted"] == [
        {"kind": "VirtualService", "namespace": "default", "name": "reviews",
         "file": str(state / "deleted" / "virtualservice_default_reviews.json")}]
    plan = apply(config, state, VS_V3)
    assert [r for _, r in plan.results] == ["created"]
    assert list(files(state)) == ["applied/virtualservice_default_reviews.yaml"]
    assert served(config, state)[REVIEWS] == "v3"


def test_delete_of_a_missing_object_is_not_found_and_changes_nothing(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    apply(config, state, VS_V1)
    plan = store.plan_delete(load(config, state), applied(VS_V1.replace("name: reviews", "name: nope")))
    assert [r for _, r in plan.results] == ["not found"]
    assert plan.changes == [] and len(plan.objects) == 1


def test_namespace_is_part_of_the_file_name_and_names_cannot_collide(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    apply(config, state, VS_V1.replace("name: reviews", "name: b-c"), namespace="a")
    apply(config, state, VS_V3.replace("name: reviews", "name: c"), namespace="a-b")
    apply(config, state, VS_V3.replace("name: reviews", "name: x_y"), namespace="a")
    assert sorted(files(state)) == ["applied/virtualservice_a-b_c.yaml", "applied/virtualservice_a_b-c.yaml",
                                    "applied/virtualservice_a_x%5Fy.yaml"]
    assert served(config, state) == {("VirtualService", "a", "b-c"): "v1", ("VirtualService", "a-b", "c"): "v3",
                                     ("VirtualService", "a", "x_y"): "v3"}


def test_seed_file_round_trips_through_the_store(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    text = (BOOKINFO_NET / "virtual-service-all-v1.yaml").read_text()
    plan = apply(config, state, text)
    assert [r for _, r in plan.results] == ["created"] * 4
    assert {o.key: o.spec for o in load(config, state).served.objects} == {o.key: o.spec for o in applied(text)}


def test_no_temp_file_is_left_behind(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    apply(config, state, VS_V1)
    apply(config, state, VS_V3)
    assert not [p for p in state.rglob(".*")]


def test_state_directory_must_not_overlap_the_config(tmp_path: Path) -> None:
    config, _ = dirs(tmp_path)
    inside = config / ".state"
    assert store.check_state_dir(str(inside), [str(config)]) == (
        f"state directory {inside} overlaps config path {config}: applied state is kept apart from the config "
        "(choose another --state-dir)")
    assert store.check_state_dir(str(tmp_path), [str(config)]) is not None  # the config inside the state
    assert store.check_state_dir(str(tmp_path / "state"), [str(config)]) is None


def test_default_state_directory_is_per_user_and_per_config(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(store.STATE_DIR_ENV, raising=False)
    a = store.resolve_state_dir(None, ["config/bookinfo", "config/tcp-echo"])
    assert a == store.resolve_state_dir(None, ["config/tcp-echo", "./config/bookinfo"])  # same config
    assert a != store.resolve_state_dir(None, ["config/bookinfo"])
    assert os.path.dirname(a) == str(tmp_path / "xdg" / "shiftproxy")
    monkeypatch.setenv(store.STATE_DIR_ENV, str(tmp_path / "env"))
    assert store.resolve_state_dir(None, ["config"]) == str(tmp_path / "env")
    assert store.resolve_state_dir(str(tmp_path / "flag"), ["config"]) == str(tmp_path / "flag")


def test_a_broken_deletion_record_is_an_error_naming_it(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    (state / "deleted").mkdir(parents=True)
    (state / "deleted" / "x.json").write_text("{not json")
    loaded = store.load_config([str(config)], str(state))
    assert [e.file for e in loaded.served.errors] == [str(state / "deleted" / "x.json")]


# read-only directories: root ignores file modes, so the check runs in a child without CAP_DAC_OVERRIDE

READ_ONLY_CHILD = textwrap.dedent("""
    import sys
    from proxy.config import store
    from proxy.config.load import load_text
    config, state = sys.argv[1], sys.argv[2]
    loaded = store.load_config([config], state)
    vs = load_text(sys.argv[3], "vs.yaml").objects + load_text(sys.argv[4], "vs.yaml").objects
    plan = store.plan_apply(loaded, vs)
    try:
        store.commit(plan.changes, state)
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


def test_read_only_state_directory_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    config, state = dirs(tmp_path)
    (state / "applied").mkdir(parents=True)
    (state / "applied" / "keep.yaml").write_text(VS_V1.replace("name: reviews", "name: details"))
    before = files(state)
    (state / "applied").chmod(0o555)
    try:
        # two objects: neither may be written
        out = subprocess.run([*_unprivileged(), sys.executable, "-c", READ_ONLY_CHILD, str(config), str(state),
                              VS_V3, VS_V3.replace("name: reviews", "name: ratings")],
                             capture_output=True, text=True, cwd=ROOT, timeout=30)
    finally:
        (state / "applied").chmod(0o755)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (f"commit: 409 state directory {state} is not writable: cannot persist applied objects "
                          "(choose a writable --state-dir or $SHIFTPROXY_STATE_DIR)\n")
    assert files(state) == before
