"""Endpoint choice inside a cluster and its active-request counts, kept per cluster as in Envoy."""

from __future__ import annotations

import random
from collections import Counter

from proxy.routing.snapshot import Cluster, Endpoint, LbPolicy, ServiceInfo
from proxy.upstream.cluster import ClusterManager

A, B, C = (Endpoint("127.0.0.1", port) for port in (9001, 9002, 9003))
SERVICE = ServiceInfo("reviews.default.svc.cluster.local", "reviews", "default")


def cluster(subset: str, *endpoints: Endpoint, policy: LbPolicy = "LEAST_REQUEST") -> Cluster:
    return Cluster(f"outbound|9080|{subset}|{SERVICE.fqdn}", SERVICE, 9080, subset, endpoints, policy)


def test_least_request_avoids_the_endpoint_with_requests_in_flight() -> None:
    manager = ClusterManager(random.Random(1))
    both = cluster("", A, B)
    assert manager.request_started(both, A)
    # two endpoints: the two random candidates are always A and B, and B has fewer requests
    assert {manager.choose_endpoint(both) for _ in range(50)} == {B}
    manager.request_finished(both, A)
    assert manager.active_requests() == 0
    assert {manager.choose_endpoint(both) for _ in range(200)} == {A, B}


def test_counts_are_per_cluster_and_one_endpoint_clusters_are_not_counted() -> None:
    manager = ClusterManager(random.Random(2))
    all_versions, v1 = cluster("", A, B), cluster("v1", A)
    assert not manager.request_started(v1, A)  # nothing to choose between: not counted
    assert manager.active_requests() == 0
    other = cluster("canary", A, B)
    for _ in range(3):
        manager.request_started(other, A)  # busy in another cluster (an Istio subset is an Envoy cluster)
    assert manager.active_requests() == 3
    assert Counter(manager.choose_endpoint(all_versions) for _ in range(400)).keys() == {A, B}


def test_finishing_a_request_of_a_cluster_gone_in_a_reload_is_harmless() -> None:
    manager = ClusterManager(random.Random(3))
    old = cluster("", A, B)
    manager.request_started(old, B)
    manager.retain([cluster("", A, C)])  # the reload dropped `old`
    manager.request_finished(old, B)
    assert manager.active_requests() == 0


def test_round_robin_cycles_and_random_uses_the_injected_rng() -> None:
    manager = ClusterManager(random.Random(4))
    rr = cluster("", A, B, C, policy="ROUND_ROBIN")
    picks = [manager.choose_endpoint(rr) for _ in range(6)]
    assert picks[:3] == picks[3:] and set(picks) == {A, B, C}
    rnd = cluster("", A, B, C, policy="RANDOM")
    first = [ClusterManager(random.Random(5)).choose_endpoint(rnd) for _ in range(3)]
    assert first[0] == first[1] == first[2]  # same seed, same pick
    assert manager.choose_endpoint(cluster("", policy="RANDOM")) is None
