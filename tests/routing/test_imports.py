"""Config and routing code is plain functions over data: it must never pull in asyncio."""

from __future__ import annotations

import subprocess
import sys


def test_config_and_routing_do_not_import_asyncio() -> None:
    code = (
        "import sys\n"
        "import proxy.config.load, proxy.config.compile, proxy.config.registry, proxy.routing.snapshot\n"
        "import proxy.routing.match, proxy.routing.weighted\n"
        "print('asyncio' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
