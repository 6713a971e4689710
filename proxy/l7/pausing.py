"""Why reading a downstream HTTP connection is paused: a bit each in `HttpDownstream._read_paused`, as
several reasons can hold at once; reading resumes when none is left."""

from __future__ import annotations

PAUSE_UPSTREAM = 1  # the upstream's write buffer is full
PAUSE_QUEUED = 2  # a pipelined request waits for the one in flight
PAUSE_BUFFER = 4  # BUFFER_LIMIT bytes are held for an upstream connection being opened
PAUSE_BROKEN = 8  # a malformed request was read: nothing after it is
PAUSE_UPGRADE = 16  # an upgrade request waits for the upstream's answer before what follows it is read
