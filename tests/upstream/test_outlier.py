"""Outlier detection as a state machine: outcomes in, ejections and the balancer's endpoints out. The
clock is injected and the interval timer's callback (`_tick`) is run by hand, so nothing waits."""

from __future__ import annotations

import random

from proxy.routing.resilience import OutlierPolicy
from proxy.routing.snapshot import Cluster, Endpoint, ServiceInfo
from proxy.upstream import outlier
from proxy.upstream.balancer import Balancer
from proxy.upstream.outlier import OutlierDetector

SERVICE = ServiceInfo("svc.default.svc.cluster.local", "svc", "default")
EPS = tuple(Endpoint("127.0.0.1", 1000 + i) for i in range(4))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def detector(n: int, **policy: object) -> tuple[OutlierDetector, Balancer, Clock]:
    pol = OutlierPolicy(**{"interval": 100.0, "max_ejection_percent": 100, **policy})  # type: ignore[arg-type]
    cluster = Cluster("c", SERVICE, 80, "", EPS[:n], outlier=pol)
    clock = Clock()
    det = OutlierDetector(cluster, pol, clock)
    balancer = Balancer(cluster, random.Random(0))
    det.attach(balancer)
    return det, balancer, clock


async def test_consecutive_5xx_ejects_and_a_success_resets_the_count() -> None:
    det, balancer, _ = detector(2, consecutive_5xx=3)
    for status in (503, 500, 200, 502, 503):
        det.report(EPS[0], status)
    assert det.ejected == 0  # the 200 broke the run
    det.report(EPS[0], 504)
    assert det.ejected == 1 and balancer.endpoints == (EPS[1],)
    assert all(balancer.choose() is EPS[1] for _ in range(20))
    det.close()


async def test_gateway_errors_only_count_502_to_504() -> None:
    det, _, _ = detector(2, consecutive_5xx=0, consecutive_gateway=2)
    for status in (500, 501, 500):
        det.report(EPS[0], status)
    assert det.ejected == 0
    det.report(EPS[0], 502)
    det.report(EPS[0], 503)
    assert det.ejected == 1
    det.close()


async def test_local_origin_failures_count_apart_when_split() -> None:
    det, _, _ = detector(2, consecutive_5xx=2, split_local_origin=True, consecutive_local_origin=3)
    det.report(EPS[0], outlier.CONNECT_FAILED)
    det.report(EPS[0], outlier.TIMEOUT)
    det.report(EPS[0], outlier.CONNECTED)  # a successful connect resets the local-origin count
    det.report(EPS[0], outlier.CONNECT_FAILED)
    det.report(EPS[0], outlier.CONNECT_FAILED)
    assert det.ejected == 0
    det.report(EPS[0], outlier.TIMEOUT)
    assert det.ejected == 1
    det.close()
    # not split: a failed connect is a 503, a timeout a 504
    det, _, _ = detector(2, consecutive_5xx=2)
    det.report(EPS[1], outlier.CONNECT_FAILED)
    det.report(EPS[1], outlier.TIMEOUT)
    assert det.ejected == 1
    det.close()


async def test_ejection_time_grows_with_each_ejection_and_decays() -> None:
    det, balancer, clock = detector(2, consecutive_5xx=1, base_ejection_time=10.0)
    det.report(EPS[0], 503)
    clock.now = 9.0
    det._tick()
    assert det.ejected == 1
    clock.now = 10.0
    det._tick()
    assert det.ejected == 0 and balancer.endpoints == EPS[:2]
    det.report(EPS[0], 503)  # second ejection: 2 × base
    clock.now = 29.0
    det._tick()
    assert det.ejected == 1
    clock.now = 30.0
    det._tick()
    assert det.ejected == 0
    # each tick without ejection lowers the multiplier: after two, the next ejection lasts 1 × base again
    clock.now = 40.0
    det._tick()
    det._tick()
    det.report(EPS[0], 503)
    clock.now = 50.0
    det._tick()
    assert det.ejected == 0
    assert det.ejections_total == 3
    det.close()


async def test_max_ejection_percent_counts_the_endpoint_being_ejected() -> None:
    det, balancer, _ = detector(3, consecutive_5xx=1, max_ejection_percent=50)
    det.report(EPS[0], 503)
    det.report(EPS[1], 503)  # 2/3 > 50 %: stays
    assert det.ejected == 1 and balancer.endpoints == (EPS[1], EPS[2])
    det.close()
    # Envoy's default 10 %: one of three is already too many
    det = OutlierDetector(Cluster("c", SERVICE, 80, "", EPS[:3]), OutlierPolicy(consecutive_5xx=1), Clock())
    det.report(EPS[0], 503)
    assert det.ejected == 0
    det.close()


async def test_panic_below_min_health_percent_uses_every_endpoint() -> None:
    det, balancer, _ = detector(4, consecutive_5xx=1, min_health_percent=50)
    det.report(EPS[0], 503)
    det.report(EPS[1], 503)
    assert balancer.endpoints == EPS[2:]  # 50 % healthy: not below the threshold
    det.report(EPS[2], 503)
    assert det.ejected == 3 and balancer.endpoints == EPS  # 25 % < 50 %: panic
    det.close()


async def test_all_ejected_without_panic_leaves_nothing_to_choose() -> None:
    det, balancer, _ = detector(1, consecutive_5xx=1)
    det.report(EPS[0], 503)
    assert balancer.choose() is None  # → 503 UH
    det.close()
