"""Certificate files: where a `credentialName` lives, and rotation.

`credentialName: NAME` is read from a directory laid out like a mounted Kubernetes TLS secret,
`DIR/NAME/{tls.crt,tls.key,ca.crt}` (`--credentials-dir`); a `NAME-cacert` secret (Istio's convention for
a separate client CA) is read from `DIR/NAME-cacert/ca.crt` when `DIR/NAME/ca.crt` is absent.

Rotation: each context built from files is a `Credential`; `refresh` compares the files' stat stamps
and, when they changed and still load, loads them into the same context. New handshakes use the new
certificate; connections already open keep theirs. A file set that no longer loads leaves the old
certificate in place and is reported.
"""

from __future__ import annotations

import os
import ssl

from proxy.tls.contexts import CertFiles, CredentialError, load_files

MESH_FILES = ("cert-chain.pem", "key.pem", "root-cert.pem")  # Istio's workload certificate file names

Stamp = tuple[tuple[int, int, int] | None, ...]


def credential_files(directory: str, name: str, want_ca: bool) -> CertFiles:
    """The files of `credentialName: name`; CredentialError saying what is missing."""
    if not directory:
        raise CredentialError(f"credentialName {name!r} needs a credentials directory (--credentials-dir DIR "
                              f"holding {name}/tls.crt and {name}/tls.key)")
    base = os.path.join(directory, name)
    cert, key = os.path.join(base, "tls.crt"), os.path.join(base, "tls.key")
    missing = [p for p in (cert, key) if not os.path.isfile(p)]
    if missing:
        raise CredentialError(f"credentialName {name!r}: {', '.join(missing)} not found")
    ca = ""
    if want_ca:
        for candidate in (os.path.join(base, "ca.crt"), os.path.join(f"{base}-cacert", "ca.crt")):
            if os.path.isfile(candidate):
                ca = candidate
                break
        else:
            raise CredentialError(f"credentialName {name!r}: mutual TLS needs a CA bundle, {base}/ca.crt not found")
    return CertFiles(cert, key, ca)


def mesh_files(directory: str) -> CertFiles:
    """The workload certificate of ISTIO_MUTUAL (`--mesh-certs DIR`)."""
    if not directory:
        raise CredentialError("ISTIO_MUTUAL needs this proxy's mesh certificates (--mesh-certs DIR holding "
                              f"{', '.join(MESH_FILES)}): there is no mesh CA here")
    cert, key, ca = (os.path.join(directory, f) for f in MESH_FILES)
    missing = [p for p in (cert, key, ca) if not os.path.isfile(p)]
    if missing:
        raise CredentialError(f"ISTIO_MUTUAL: {', '.join(missing)} not found")
    return CertFiles(cert, key, ca)


def _stamp(files: CertFiles) -> Stamp:
    out: list[tuple[int, int, int] | None] = []
    for path in files.paths:
        try:
            st = os.stat(path)  # follows symlinks: a Kubernetes secret volume swaps its ..data link
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class Credential:
    """Files loaded into one context, reloaded into it when they change."""

    __slots__ = ("context", "files", "stamp", "server")

    def __init__(self, context: ssl.SSLContext, files: CertFiles, server: bool) -> None:
        self.context = context
        self.files = files
        self.server = server
        self.stamp = _stamp(files)

    def probe(self) -> tuple[bool, str | None]:
        """(changed and loadable, problem). Reads and parses the files into a scratch context only, so it
        may run in a worker thread while handshakes use the live context."""
        stamp = _stamp(self.files)
        if stamp == self.stamp:
            return False, None
        self.stamp = stamp  # report a bad file once, not on every check
        trial = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if self.server else ssl.PROTOCOL_TLS_CLIENT)
        try:
            load_files(trial, self.files)  # a half-written pair must not replace a working one
        except CredentialError as exc:
            return False, f"{exc}; still using the previous certificate"
        return True, None

    def install(self) -> str | None:
        """Load the certificate and key into the live context. Call it on the event loop's thread: OpenSSL
        does not allow changing a context while another thread starts a handshake with it. A context
        cannot forget a CA, so a changed CA bundle is left to a rebuild of the config (fresh contexts)."""
        try:
            load_files(self.context, CertFiles(self.files.cert, self.files.key))
        except CredentialError as exc:  # changed again since `probe`
            return f"{exc}; still using the previous certificate"
        return None

    def refresh(self) -> tuple[bool, str | None]:
        """`probe`, then `install` (one thread: tests and tools)."""
        changed, problem = self.probe()
        if changed:
            problem = self.install()
        return changed and problem is None, problem

    @property
    def ca_stamp(self) -> tuple[int, int, int] | None:
        return self.stamp[-1] if self.files.ca else None


def stamps(credentials: tuple[Credential, ...] | list[Credential]) -> str:
    """The files' stamps, part of a snapshot's content hash: a changed CA bundle makes a new snapshot."""
    return repr([c.stamp for c in credentials])
