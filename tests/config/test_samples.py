"""Every Istio sample shipped with the Istio tasks we reproduce loads and validates unchanged.

Samples that reference subsets or hosts defined in other files (or in Kubernetes) only draw warnings;
other kinds (Deployment, ServiceAccount…) are skipped with a notice; Kubernetes Services and the Gateway
API kinds are read.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.config.load import ISTIO_KINDS, iter_config_files, load_paths
from proxy.config.validate import validate

SAMPLES = Path(__file__).parents[2] / ".." / "shared" / "istio-samples"
SAMPLE_FILES = sorted(iter_config_files([str(SAMPLES)]))
NETWORKING = SAMPLES / "bookinfo" / "networking"


def test_the_samples_are_there() -> None:
    # guards against the parametrized tests below passing vacuously on a wrong path
    assert len(SAMPLE_FILES) >= 30
    loaded = load_paths([str(NETWORKING)])
    assert {o.kind for o in loaded.objects} == set(ISTIO_KINDS) - {"WorkloadEntry"}


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: str(Path(p).relative_to(SAMPLES)))
def test_sample_file_validates_without_errors(path: str) -> None:
    loaded = load_paths([path])
    assert loaded.errors == []
    errors, warnings = validate(loaded.objects)
    assert [str(e) for e in errors] == []
    assert all(w.severity == "warning" for w in warnings)
    # every document is either an Istio object or a one-line notice, never silently dropped
    assert loaded.objects or loaded.notices


def test_non_istio_kinds_are_notices() -> None:
    loaded = load_paths([str(SAMPLES / "bookinfo" / "platform" / "kube" / "bookinfo.yaml")])
    assert loaded.errors == []
    assert {o.kind for o in loaded.objects} == {"Service"}  # Services are read; the rest is skipped
    assert any("skipping apps/v1 Deployment" in n for n in loaded.notices)
    assert any("skipping v1 ServiceAccount" in n for n in loaded.notices)
    gateway_api = load_paths([str(SAMPLES / "bookinfo" / "gateway-api" / "route-reviews-50-v3.yaml")])
    assert [o.kind for o in gateway_api.objects] == ["HTTPRoute"] and gateway_api.notices == []


def test_reviews_50_v3_alone_is_valid_and_warns_about_its_subsets() -> None:
    loaded = load_paths([str(NETWORKING / "virtual-service-reviews-50-v3.yaml")])
    errors, warnings = validate(loaded.objects)
    assert errors == []
    subset_warnings = sorted(w.reason for w in warnings if w.path.endswith(".subset"))
    assert subset_warnings == [
        f"subset {v} is not defined by any DestinationRule for reviews.default.svc.cluster.local: "
        "requests will get 503 NC" for v in ("v1", "v3")
    ]


def test_reviews_50_v3_with_destination_rules_has_no_subset_warnings() -> None:
    loaded = load_paths([str(NETWORKING / "virtual-service-reviews-50-v3.yaml"),
                         str(NETWORKING / "destination-rule-all.yaml")])
    errors, warnings = validate(loaded.objects)
    assert errors == []
    assert [str(w) for w in warnings if "DestinationRule" in w.reason] == []


def test_tcp_echo_shift_with_its_gateway_and_subsets_has_no_reference_warnings() -> None:
    # tcp-echo-all-v1.yaml defines the Gateway and DestinationRule; the 80/20 VirtualService replaces its VS
    all_v1 = load_paths([str(SAMPLES / "tcp-echo" / "tcp-echo-all-v1.yaml")])
    shift = load_paths([str(SAMPLES / "tcp-echo" / "tcp-echo-20-v2.yaml")])
    objects = [o for o in all_v1.objects if o.kind != "VirtualService"] + shift.objects
    errors, warnings = validate(objects)
    assert errors == []
    assert [str(w) for w in warnings if "Gateway" in w.reason or "DestinationRule" in w.reason] == []
