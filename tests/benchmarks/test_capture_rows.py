"""The capture rows of the benchmark report: what they show is computed from the capture run's summary."""

from __future__ import annotations

from benchmarks import capture_rows


def test_section_shows_each_path_and_the_difference() -> None:
    summary = {
        "http-keepalive": {"cpu_us_per_op": {"explicit": 40.0, "captured": 43.5},
                           "ops_per_s": {"explicit": 10_000.0, "captured": 9_000.0}},
        "tcp-connect": {"cpu_us_per_op": {"explicit": 150.0, "captured": 149.0},
                        "ops_per_s": {"explicit": 2_000.0, "captured": 2_100.0}},
    }
    text = capture_rows.section(summary, 5.0, 2)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows == [
        "| HTTP keep-alive, 20 conns | 40.0 µs per request | 43.5 µs | +3.5 µs | 10,000/s | 9,000/s |",
        "| new TCP connections, 20 at a time × 64 B echoed | 150.0 µs per connection | 149.0 µs | -1.0 µs "
        "| 2,000/s | 2,100/s |",
    ]
    assert "2 round(s) × 5 s per path" in text
