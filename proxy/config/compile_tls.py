"""TLS of the compiled snapshot: gateway servers' certificates (per listener, chosen by SNI) and the
clusters' TLS origination (DestinationRule `tls`).

Certificate files are read here, once per config (compile runs off the event loop); a missing or
unusable file, or a mode this proxy cannot honour, is a config error with the file, line and YAML path
of the `tls` block. A DestinationRule that asks for TLS gets TLS or a config error, never plaintext.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.config.diagnostics import ConfigError, Diagnostic
from proxy.config.load import RawObject
from proxy.routing.match import TcpMatch
from proxy.routing.snapshot import (
    HttpRoute,
    Redirect,
    RouteTable,
    SniRoute,
    TcpRoute,
    VirtualHost,
    WeightedDestinations,
)
from proxy.tls.contexts import (
    CertFiles,
    ClientSettings,
    CredentialError,
    ListenerTls,
    ServerSettings,
    UpstreamTls,
    client_context,
    server_context,
)
from proxy.tls.credentials import Credential, credential_files, mesh_files

TERMINATED = ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL")


@dataclass(frozen=True, slots=True)
class TlsOptions:
    credentials_dir: str = ""  # credentialName → DIR/<name>/{tls.crt,tls.key,ca.crt}
    mesh_certs: str = ""  # ISTIO_MUTUAL: DIR/{cert-chain.pem,key.pem,root-cert.pem}
    load_files: bool = True  # False: check modes only (`shiftproxy validate` has no certificate files)


class TlsCompiler:
    """Collects contexts and errors for one compile; `finish` raises every error at once."""

    def __init__(self, objects: list[RawObject], options: TlsOptions) -> None:
        self.options = options
        self.errors: list[Diagnostic] = []
        self.credentials: list[Credential] = []
        self._server: dict[ServerSettings, ssl.SSLContext] = {}
        self._client: dict[ClientSettings, UpstreamTls] = {}
        # where each tls block was written, by identity of its dict (compile passes the same dicts on)
        self._where: dict[int, tuple[RawObject, str]] = {}
        for obj in objects:
            if obj.kind == "DestinationRule":
                self._index_policy(obj, obj.spec.get("trafficPolicy"), "spec.trafficPolicy")
                for i, subset in enumerate(obj.spec.get("subsets") or []):
                    self._index_policy(obj, (subset or {}).get("trafficPolicy"), f"spec.subsets[{i}].trafficPolicy")
            elif obj.kind == "Gateway":
                for i, server in enumerate(obj.spec.get("servers") or []):
                    if isinstance((server or {}).get("tls"), dict):
                        self._where[id(server)] = (obj, f"spec.servers[{i}]")

    def _index_policy(self, obj: RawObject, policy: Any, path: str) -> None:
        if not isinstance(policy, dict):
            return
        if isinstance(policy.get("tls"), dict):
            self._where[id(policy["tls"])] = (obj, f"{path}.tls")
        for i, pls in enumerate(policy.get("portLevelSettings") or []):
            if isinstance((pls or {}).get("tls"), dict):
                self._where[id(pls["tls"])] = (obj, f"{path}.portLevelSettings[{i}].tls")

    def _error(self, key: int, suffix: str, reason: str) -> None:
        obj, path = self._where.get(key, (None, ""))
        if obj is None:
            self.errors.append(Diagnostic("config", 0, "", reason))
            return
        full = f"{path}.{suffix}" if suffix else path
        parts: list[str | int] = []
        for piece in full.replace("]", "").split("."):
            name, _, index = piece.partition("[")
            parts.append(name)
            if index:
                parts.append(int(index))
        diag = Diagnostic(obj.file, obj.line_of(tuple(parts)), full, reason)  # type: ignore[arg-type]
        if str(diag) not in {str(e) for e in self.errors}:
            self.errors.append(diag)

    def finish(self) -> None:
        if self.errors:
            raise ConfigError(self.errors)

    # gateway servers ------------------------------------------------------------------------------

    def listener(self, port: int, servers: list[dict[str, Any]]) -> ListenerTls | None:
        """The TLS of a gateway port whose servers terminate TLS; None when none does (plain or PASSTHROUGH)."""
        entries: list[tuple[list[str], ServerSettings, int]] = []
        for server in servers:
            tls = server.get("tls") or {}
            mode = str(tls.get("mode") or "PASSTHROUGH")
            protocol = str((server.get("port") or {}).get("protocol", "")).upper()
            if protocol not in ("HTTPS", "TLS"):
                continue  # plain HTTP (httpsRedirect) or TCP
            if mode in ("AUTO_PASSTHROUGH", "ISTIO_MUTUAL"):
                what = ("routes by the SNI of Istio's multi-cluster naming (outbound_.PORT_.SUBSET_.HOST), which "
                        "this proxy does not implement; use PASSTHROUGH with VirtualService tls routes"
                        if mode == "AUTO_PASSTHROUGH" else
                        "needs a mesh identity issued by istiod for the gateway; there is no mesh CA here: "
                        "use SIMPLE or MUTUAL with credentialName or serverCertificate/privateKey")
                self._error(id(server), "tls.mode", f"{mode} is not supported: {mode} {what}")
                continue
            if mode not in TERMINATED:
                continue
            settings = self._server_settings(server, tls, mode)
            if settings is not None:
                hosts = [str(h).split("/", 1)[-1].lower() for h in server.get("hosts") or ["*"]]
                entries.append((hosts, settings, id(server)))
        if not entries:
            return None
        mutual = {s.mode == "MUTUAL" for _, s, _ in entries}
        if len(mutual) > 1:
            self._error(id(servers[0]), "tls.mode", f"port {port}: MUTUAL and non-MUTUAL servers share the port; "
                                                    "the client-certificate request precedes SNI, so give them "
                                                    "separate ports")
        exact: dict[str, ssl.SSLContext] = {}
        suffixes: list[tuple[str, ssl.SSLContext]] = []
        catch_all = None
        contexts = []
        for hosts, settings, key in entries:
            context = self._server_context(settings, key)
            if context is None:
                continue
            contexts.append(context)
            for host in hosts:
                if host == "*":
                    catch_all = catch_all or context
                elif host.startswith("*."):
                    suffixes.append((host[1:], context))
                else:
                    exact.setdefault(host, context)
        if not contexts:
            return None
        suffixes.sort(key=lambda item: -len(item[0]))
        modes = {s.mode for _, s, _ in entries}
        verify = (ssl.CERT_REQUIRED if modes == {"MUTUAL"} else
                  ssl.CERT_OPTIONAL if modes & {"MUTUAL", "OPTIONAL_MUTUAL"} else ssl.CERT_NONE)
        # versions and ciphers are negotiated before SNI picks a server: the strictest of the port's servers
        lows = [s.min_version for _, s, _ in entries if s.min_version]
        highs = [s.max_version for _, s, _ in entries if s.max_version]
        ciphers = next((s.cipher_suites for _, s, _ in entries if s.cipher_suites), ())
        policy = ServerSettings(entries[0][1].mode, entries[0][1].files, max(lows) if lows else "",
                                min(highs) if highs else "", ciphers)
        return ListenerTls(exact, suffixes, catch_all, contexts[0], verify, policy,
                           tuple(h for hosts, _, _ in entries for h in hosts))

    def _server_settings(self, server: dict[str, Any], tls: dict[str, Any], mode: str) -> ServerSettings | None:
        want_ca = mode != "SIMPLE"
        if tls.get("credentialName") or tls.get("credentialNames"):
            name = str(tls.get("credentialName") or (tls.get("credentialNames") or [""])[0])
            field = "tls.credentialName" if tls.get("credentialName") else "tls.credentialNames"
            if not self.options.load_files:
                return None
            try:
                files = credential_files(self.options.credentials_dir, name, want_ca)
            except CredentialError as exc:
                self._error(id(server), field, str(exc))
                return None
        else:
            pair = (tls.get("tlsCertificates") or [tls])[0] or {}
            files = CertFiles(str(pair.get("serverCertificate") or ""), str(pair.get("privateKey") or ""),
                              str(tls.get("caCertificates") or "") if want_ca else "")
        # caCrl, subjectAltNames, verifyCertificateSpki/Hash: warned about by validation (proxy.config.enforcement)
        return ServerSettings(mode, files, str(tls.get("minProtocolVersion") or "").replace("TLS_AUTO", ""),
                              str(tls.get("maxProtocolVersion") or "").replace("TLS_AUTO", ""),
                              tuple(str(c) for c in tls.get("cipherSuites") or ()))

    def _server_context(self, settings: ServerSettings, key: int) -> ssl.SSLContext | None:
        if not self.options.load_files:
            return None
        context = self._server.get(settings)
        if context is None:
            try:
                context = server_context(settings)
            except CredentialError as exc:
                self._error(key, "tls", str(exc))
                return None
            self._server[settings] = context
            self.credentials.append(Credential(context, settings.files, server=True))
        return context

    # clusters -------------------------------------------------------------------------------------

    def cluster(self, tls: Any, host: str) -> UpstreamTls | None:
        """A cluster's origination, or None for plaintext (no `tls`, or mode DISABLE)."""
        if not isinstance(tls, dict):
            return None
        mode = str(tls.get("mode") or "DISABLE")
        if mode == "DISABLE":
            return None
        key = id(tls)
        try:
            if mode == "ISTIO_MUTUAL":
                files = mesh_files(self.options.mesh_certs) if self.options.load_files else CertFiles()
                settings = ClientSettings("MUTUAL", files, str(tls.get("sni") or ""),
                                          tuple(str(s) for s in tls.get("subjectAltNames") or ()))
            else:
                if tls.get("credentialName"):
                    if not self.options.load_files:
                        return None
                    files = credential_files(self.options.credentials_dir, str(tls["credentialName"]),
                                             want_ca=False)
                    ca = os.path.join(self.options.credentials_dir, str(tls["credentialName"]), "ca.crt")
                    files = CertFiles(files.cert if mode == "MUTUAL" else "", files.key if mode == "MUTUAL" else "",
                                      ca if os.path.isfile(ca) else "")
                else:
                    files = CertFiles(str(tls.get("clientCertificate") or "") if mode == "MUTUAL" else "",
                                      str(tls.get("privateKey") or "") if mode == "MUTUAL" else "",
                                      str(tls.get("caCertificates") or ""))
                settings = ClientSettings(mode, files, str(tls.get("sni") or ""),
                                          tuple(str(s) for s in tls.get("subjectAltNames") or ()),
                                          bool(tls.get("insecureSkipVerify")))
        except CredentialError as exc:
            self._error(key, "mode" if mode == "ISTIO_MUTUAL" else "credentialName", f"{host}: {exc}")
            return None
        if not self.options.load_files:
            return None
        upstream = self._client.get(settings)
        if upstream is None:
            try:
                context = client_context(settings)
            except CredentialError as exc:
                self._error(key, "", f"{host}: {exc}")
                return None
            tag = hashlib.sha256(repr(settings).encode()).hexdigest()[:12]
            upstream = UpstreamTls(context, settings.sni, settings.subject_alt_names, tag=f"tls:{tag}")
            self._client[settings] = upstream
            if settings.files.paths:
                self.credentials.append(Credential(context, settings.files, server=False))
        return upstream


def terminates(server: dict[str, Any]) -> bool:
    """Whether a gateway server terminates TLS (else HTTPS/TLS is passed through, routed by SNI)."""
    return str((server.get("tls") or {}).get("mode") or "PASSTHROUGH") in TERMINATED


def https_redirects(table: RouteTable, servers: list[dict[str, Any]], port: int) -> RouteTable:
    """`tls.httpsRedirect` on a plain HTTP server: every request for its hosts gets a 301 to https (Envoy's
    `require_tls: ALL` on those virtual hosts)."""
    hosts = [str(h).split("/", 1)[-1].lower() for s in servers if (s.get("tls") or {}).get("httpsRedirect")
             for h in s.get("hosts") or ["*"]]
    if not hosts:
        return table
    redirect = HttpRoute(name=f"https_redirect_{port}", virtual_service="", rule_index=0, matches=(),
                         action=Redirect(scheme="https", code=301))

    def secure(vh: VirtualHost) -> VirtualHost:
        return VirtualHost(vh.name, vh.domains, (redirect,), False)

    def covered(domain: str) -> bool:
        bare = domain.rsplit(":", 1)[0]
        return any(h == "*" or h == bare or (h.startswith("*.") and bare.endswith(h[1:])) for h in hosts)

    exact = {d: secure(vh) if covered(d) else vh for d, vh in table.exact.items()}
    suffixes = [(sfx, secure(vh) if covered("x" + sfx) else vh) for sfx, vh in table.suffixes]
    catch_all = table.catch_all
    for host in hosts:  # a redirecting server's hosts redirect even without a VirtualService
        vh = VirtualHost(f"https_redirect:{host}", (host,), (redirect,), False)
        if host == "*":
            catch_all = secure(catch_all) if catch_all is not None else vh
        elif host.startswith("*."):
            if all(sfx != host[1:] for sfx, _ in suffixes):
                suffixes.append((host[1:], vh))
        else:
            exact.setdefault(host, vh)
            exact.setdefault(f"{host}:{port}", vh)
    suffixes.sort(key=lambda item: -len(item[0]))
    return RouteTable(exact, tuple(suffixes), catch_all)


def sni_routes(virtual_services: list[RawObject], gateway_names: list[str], port: int,
               destinations: Callable[[RawObject, list[dict[str, Any]], int | None, bool], WeightedDestinations],
               source_ok: Callable[[dict[str, Any]], bool],
               gateway_ref: Callable[[Any, str], str]) -> list[SniRoute]:
    """The VirtualServices' tls[] rules for one listener (gateway names, or ["mesh"] for the sidecar), in
    order: blocks for another gateway or port are dropped, as istiod does when it builds the listener."""
    out: list[SniRoute] = []
    for vs in virtual_services:
        top = [gateway_ref(g, vs.namespace) for g in vs.spec.get("gateways") or ["mesh"]]
        for index, rule in enumerate(vs.spec.get("tls") or []):
            hosts: list[str] = []
            nets: list[Any] = []
            matched = False
            for block in rule.get("match") or []:
                block = block or {}
                gws = [gateway_ref(g, vs.namespace) for g in block["gateways"]] if block.get("gateways") else top
                if not any(g in gws for g in gateway_names):
                    continue
                if block.get("port") and int(block["port"]) != port:
                    continue
                if not source_ok(block):
                    continue  # sourceLabels / sourceNamespace of another workload
                matched = True
                hosts.extend(str(h).lower() for h in block.get("sniHosts") or [])
                nets.extend(ipaddress.ip_network(s, strict=False) for s in block.get("destinationSubnets") or [])
            if not matched:
                continue
            route = TcpRoute(f"{vs.namespace}/{vs.name}#tls{index}", f"{vs.namespace}/{vs.name}",
                             (TcpMatch(0, tuple(nets)),) if nets else (),
                             destinations(vs, rule.get("route") or [], port, False))
            out.append(SniRoute(route, tuple(dict.fromkeys(hosts))))
    return out
