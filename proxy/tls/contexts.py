"""SSLContexts built from compiled TLS settings, for gateway servers (termination) and for clusters
(origination). Building reads the certificate files: call it off the event loop (config compile does)."""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

ALPN = ["http/1.1"]  # the data plane speaks HTTP/1.1 only

VERSIONS = {
    "TLSV1_0": ssl.TLSVersion.TLSv1,
    "TLSV1_1": ssl.TLSVersion.TLSv1_1,
    "TLSV1_2": ssl.TLSVersion.TLSv1_2,
    "TLSV1_3": ssl.TLSVersion.TLSv1_3,
}


# failed handshakes by (side, reason): OpenSSL's reason (certificate_verify_failed, no_shared_cipher,
# peer_did_not_return_a_certificate, ...) or subject_alt_name; shiftproxy_tls_handshake_failures_total
HANDSHAKE_FAILURES: Counter[tuple[str, str]] = Counter()


class _CountedSSLObject(ssl.SSLObject):
    """The downstream side's TLS object: counts a failed handshake with its reason (the event loop
    closes such a connection without telling the listener's protocol)."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            HANDSHAKE_FAILURES["downstream", str(exc.reason or "handshake_failure").lower()] += 1
            raise


class CredentialError(Exception):
    """A certificate, key or CA file that is missing or unusable; the message says which and why."""


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where one identity lives: a certificate chain and its key, and (optionally) a CA bundle to verify the
    peer with."""

    cert: str = ""
    key: str = ""
    ca: str = ""

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p in (self.cert, self.key, self.ca) if p)


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """One Gateway server's `tls`, resolved: mode SIMPLE, MUTUAL or OPTIONAL_MUTUAL."""

    mode: str
    files: CertFiles
    min_version: str = ""  # TLSV1_2 ...; "" = TLS_AUTO
    max_version: str = ""
    cipher_suites: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """A DestinationRule `tls` that originates TLS: SIMPLE or MUTUAL (ISTIO_MUTUAL is MUTUAL with mesh files)."""

    mode: str
    files: CertFiles
    sni: str = ""
    subject_alt_names: tuple[str, ...] = ()
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    context: ssl.SSLContext
    sni: str = ""  # "" = none sent (Envoy's default without `sni`)
    subject_alt_names: tuple[str, ...] = ()  # the server certificate must carry one of these
    tag: str = ""  # stable across reloads for equal settings: upstream pools are keyed by it
    handshake_timeout: float = 10.0


def load_files(context: ssl.SSLContext, files: CertFiles) -> None:
    """Load `files` into `context`; CredentialError naming the file and the reason."""
    if files.cert:
        try:
            context.load_cert_chain(files.cert, files.key or None)
        except FileNotFoundError as exc:
            raise CredentialError(f"{exc.filename or files.cert}: no such file") from exc
        except (ssl.SSLError, OSError) as exc:
            raise CredentialError(f"certificate {files.cert} / key {files.key}: {_reason(exc)}") from exc
    if files.ca:
        try:
            context.load_verify_locations(cafile=files.ca)
        except FileNotFoundError as exc:
            raise CredentialError(f"{files.ca}: no such file") from exc
        except (ssl.SSLError, OSError) as exc:
            raise CredentialError(f"CA bundle {files.ca}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"not a usable PEM certificate or key ({exc.reason})"
    return getattr(exc, "strerror", None) or str(exc)


def _versions(context: ssl.SSLContext, low: str, high: str) -> None:
    context.minimum_version = VERSIONS.get(low, ssl.TLSVersion.TLSv1_2)  # Envoy's server default is TLS 1.2
    if high in VERSIONS:
        context.maximum_version = VERSIONS[high]


def server_context(settings: ServerSettings) -> ssl.SSLContext:
    """The context presenting one server's certificate (switched to by SNI)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    load_files(context, settings.files)
    _apply_server_policy(context, settings)
    return context


def _apply_server_policy(context: ssl.SSLContext, settings: ServerSettings) -> None:
    _versions(context, settings.min_version, settings.max_version)
    if settings.cipher_suites:
        try:
            context.set_ciphers(":".join(settings.cipher_suites))
        except ssl.SSLError as exc:
            raise CredentialError(f"cipherSuites {list(settings.cipher_suites)}: none is usable") from exc
    context.verify_mode = {"MUTUAL": ssl.CERT_REQUIRED, "OPTIONAL_MUTUAL": ssl.CERT_OPTIONAL}.get(
        settings.mode, ssl.CERT_NONE)
    context.set_alpn_protocols(ALPN)


def client_context(settings: ClientSettings) -> ssl.SSLContext:
    """The context of upstream connections: verifies the server (its CA, else the system roots) unless
    insecureSkipVerify; presents a client certificate for MUTUAL."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # Istio checks subjectAltNames when given, not the host name
    if settings.insecure_skip_verify:
        context.verify_mode = ssl.CERT_NONE
    elif not settings.files.ca:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    load_files(context, settings.files)
    context.set_alpn_protocols(ALPN)
    return context


@dataclass(slots=True)
class ListenerTls:
    """The TLS of one listener: a context per server, chosen by the client's SNI (exact host, then the
    longest wildcard, then `*`; a client sending no SNI gets the first server's). Compiled per config;
    the listening socket's own context (`front_context`) asks the live config for it on every handshake,
    so a reload that changes certificates needs no new socket."""

    exact: dict[str, ssl.SSLContext]
    suffixes: list[tuple[str, ssl.SSLContext]]  # (".example.com", ctx), longest first
    catch_all: ssl.SSLContext | None
    default: ssl.SSLContext
    verify_mode: ssl.VerifyMode
    policy: ServerSettings  # versions and ciphers of the handshake (fixed before SNI is seen)
    hosts: tuple[str, ...] = field(default=())

    def select(self, server_name: str | None) -> ssl.SSLContext | None:
        if not server_name:
            return self.catch_all or self.default
        name = server_name.lower()
        context = self.exact.get(name)
        if context is not None:
            return context
        for suffix, context in self.suffixes:
            if name.endswith(suffix):
                return context
        return self.catch_all

    @property
    def kind(self) -> str:
        """Part of the listener key: a change of client-certificate policy rebinds the port."""
        return {ssl.CERT_REQUIRED: "mtls", ssl.CERT_OPTIONAL: "optional-mtls"}.get(self.verify_mode, "tls")


def front_context(lookup: Callable[[], ListenerTls | None]) -> ssl.SSLContext:
    """The context a listening socket is created with. Its SNI callback switches each handshake to the
    context of the server the client named, taken from the config live at that moment. The protocol
    versions, ciphers and client-certificate request are fixed before the callback, so they come from
    here (the listener's policy, set from the config the socket was bound with)."""
    tls = lookup()
    assert tls is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_server_policy(context, tls.policy)
    context.verify_mode = tls.verify_mode  # no certificate of its own: every handshake gets one by SNI

    def on_sni(sslobj: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> int | None:
        live = lookup()
        chosen = live.select(server_name) if live is not None else None
        if chosen is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME  # no server for this name: refused (as Envoy)
        sslobj.context = chosen
        return None

    context.sni_callback = on_sni  # type: ignore[assignment]
    context.sslobject_class = _CountedSSLObject
    return context
