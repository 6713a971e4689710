"""The TLS side of the benchmark: one server identity for every proxy, and what the report says about it.

The certificate and key are made once per run by `trustme` (a throwaway CA issuing a leaf for
`bench.local` and 127.0.0.1) and written as PEM files: shiftproxy reads them through the Gateway's
`serverCertificate`/`privateKey`, Envoy through the translated `DownstreamTlsContext`, nginx through
`ssl_certificate`/`ssl_certificate_key`, HAProxy through `crt` with chain and key in one file.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.istio_config import TlsFiles

KEY_TYPES = {"ecdsa": "ECDSA P-256", "rsa": "RSA-2048"}
SERVER_NAME = "bench.local"  # the SNI the handshake client sends; the certificate names it


def make_tls_files(directory: Path, key_type: str = "ecdsa") -> TlsFiles:
    """Write `cert.pem` (leaf chain), `key.pem` and `combined.pem` (both) into `directory`."""
    import trustme  # only needed when the TLS loads run

    kind = trustme.KeyType.RSA if key_type == "rsa" else trustme.KeyType.ECDSA
    ca = trustme.CA(key_type=kind)
    leaf = ca.issue_cert(SERVER_NAME, "127.0.0.1", key_type=kind)
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(str(directory / "cert.pem"), str(directory / "key.pem"), str(directory / "combined.pem"))
    Path(files.cert).write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(files.key)
    leaf.private_key_and_cert_chain_pem.write_to_path(files.combined)
    return files


def nginx_tls_server(port: int, files: TlsFiles) -> str:
    """An nginx `server` block terminating TLS on `port` in front of the `http_backend` upstream."""
    return f"""  server {{
    listen 127.0.0.1:{port} ssl backlog=4096;
    ssl_certificate {files.cert};
    ssl_certificate_key {files.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://http_backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
"""


def tls_notes(key_type: str) -> list[str]:
    return [
        f"TLS rows: every proxy presents the same {KEY_TYPES[key_type]} certificate (made by trustme for this run)"
        " and key, TLS 1.2–1.3 allowed (each negotiates TLS 1.3 with these clients), ALPN http/1.1, then the"
        " same HTTP 50/50 route as the HTTP rows. shiftproxy: an HTTPS Gateway server (`tls.mode: SIMPLE`,"
        " serverCertificate/privateKey); Envoy: a `DownstreamTlsContext` on the listener translated from it;"
        " nginx: `listen ... ssl`; HAProxy: `bind ... ssl crt`.",
        "HTTPS keep-alive: wrk over 50 TLS connections opened once. HTTPS `Connection: close`: wrk, a new"
        " connection per request; wrk offers the session ticket of its previous connection and every proxy"
        " accepts it by default (checked each run; a target that does not gets a note), so these are resumed"
        " (PSK + ECDHE) handshakes without the certificate signature."
        " New TLS connections, full handshake: `benchmarks/loadgen.py tls-handshake`, 50 workers that each open a"
        " connection without a session to resume (SNI bench.local, no certificate verification, like wrk), send"
        " one `Connection: close` request and read the response; the client counts resumed sessions (none) and"
        " TLS versions. It runs on the load CPU with the backends and costs about as much CPU per handshake as"
        " wrk does (its row says how much): where its CPU per handshake × the rate nears one second, the client is"
        " the limit, and the proxy CPU per handshake is the figure to compare.",
    ]
