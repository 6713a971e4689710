"""Gateway rules: servers, their hosts, ports and binds, and server-side TLS."""

from __future__ import annotations

from proxy.config.diagnostics import Path
from proxy.config.hosts import check_partial_wildcard, check_wildcard_domain, is_dns1123_label, is_ip
from proxy.config.load import RawObject
from proxy.config.schema import Msg, Report
from proxy.config.validate.common import (
    _HTTP_PROTOCOLS,
    _TLS_PROTOCOLS,
    UNIX_PREFIX,
    _msgs,
    _port,
    _protocol,
    _unix_address_problem,
)


def _gateway(r: Report, gw: Msg, obj: RawObject) -> None:
    servers = gw.get("servers") or []
    if not servers and "servers" not in gw.bad:
        r.error(gw.at("servers"), "gateway must have at least one server")
    names: set[str] = set()
    for server in _msgs(servers):
        _server(r, server)
        port = server.get("port")
        if not isinstance(port, Msg):
            continue
        name = port.get("name", "")
        if name and name in names:
            r.error(port.at("name"), f"port names in servers must be unique: duplicate name {name}")
        names.add(name)
        tls = server.get("tls")
        protocol = _protocol(port.get("protocol", ""))
        if isinstance(tls, Msg) and tls.get("httpsRedirect") and protocol not in _HTTP_PROTOCOLS:
            r.warn(tls.at("httpsRedirect"), "tls.httpsRedirect should only be used with http servers")


def _gateway_host(r: Report, path: Path, host: str) -> None:
    """ValidateNamespaceSlashWildcardHostname for gateways: `[ns/]dnsName`, FQDN or `*`, IPs allowed."""
    if "/" in host:
        namespace, host = host.split("/", 1)
        if not namespace or not host:
            r.error(path, "config namespace and dnsName in host entry cannot be empty")
            return
        if namespace not in ("*", ".") and not is_dns1123_label(namespace):
            r.error(path, f"invalid namespace value {namespace!r} in gateway")
    if host != "*" and "." not in host and not is_ip(host):
        r.error(path, "short names (non FQDN) are not allowed")
    elif (problem := check_wildcard_domain(host)) and not is_ip(host):
        r.error(path, problem)
    if problem := check_partial_wildcard(host):
        r.error(path, problem)


def _server(r: Report, server: Msg) -> None:
    hosts = server.get("hosts") or []
    if not hosts and "hosts" not in server.bad:
        r.error(server.at("hosts"), "server config must contain at least one host")
    for k, host in enumerate(hosts):
        if isinstance(host, str):
            _gateway_host(r, server.at("hosts", k), host)
    bind = server.get("bind", "")
    port = server.get("port")
    before = len(r.errors)
    if not server.has("port"):
        r.error(server.at("port"), "port is required")
    elif isinstance(port, Msg):
        protocol = port.get("protocol", "")
        if _protocol(protocol) is None and "protocol" not in port.bad:
            r.error(port.at("protocol"), f"invalid protocol {protocol!r}, supported protocols are HTTP, HTTP2, GRPC, "
                                         "GRPC-WEB, MONGO, REDIS, MYSQL, TCP")
        number = port.get("number", 0)
        if "number" not in port.bad and (number > 0 or not bind.startswith(UNIX_PREFIX)):
            _port(r, port.at("number"), number)
        if port.get("targetPort", 0) > 0:
            r.error(port.at("targetPort"), "targetPort has no impact on Gateways")
        if not port.get("name") and "name" not in port.bad:
            r.error(port.at("name"), "port name must be set")
    port_ok = len(r.errors) == before and isinstance(port, Msg)
    if bind.startswith(UNIX_PREFIX):
        if problem := _unix_address_problem(bind[len(UNIX_PREFIX):]):
            r.error(server.at("bind"), problem)
        if isinstance(port, Msg) and port.get("number"):
            r.error(port.at("number"), "port number must be 0 for unix domain socket")
    elif bind and not is_ip(bind):
        r.error(server.at("bind"), f"{bind} is not a valid IP")
    tls = server.get("tls")
    if isinstance(tls, Msg):
        _server_tls(r, tls)
    if port_ok and isinstance(port, Msg):
        protocol = _protocol(port.get("protocol", ""))
        if protocol in _TLS_PROTOCOLS and not server.has("tls"):
            r.error(server.at("tls"), "server must have TLS settings for HTTPS/TLS protocols")
        elif protocol not in _TLS_PROTOCOLS and isinstance(tls, Msg):
            if protocol in _HTTP_PROTOCOLS:
                passthrough = tls.get("mode", "PASSTHROUGH") in ("PASSTHROUGH", "AUTO_PASSTHROUGH")
                if not passthrough or any(tls.get(f) for f in ("caCertificates", "privateKey", "serverCertificate")):
                    r.error(server.at("tls"), "server cannot have TLS settings for plain text HTTP ports")
            else:
                r.error(server.at("tls"), "server cannot have TLS settings for non HTTPS/TLS ports")


def _server_tls(r: Report, tls: Msg) -> None:
    mode = tls.get("mode", "PASSTHROUGH")
    if tls.get("minProtocolVersion") in ("TLSV1_0", "TLSV1_1") and not tls.get("cipherSuites"):
        r.warn(tls.at("minProtocolVersion"), "TLS version below TLSV1_2 require setting compatible ciphers as by "
                                             "default they no longer include compatible ciphers.")
    certs = [f for f in ("serverCertificate", "privateKey", "caCertificates", "tlsCertificates", "credentialName",
                         "credentialNames") if tls.get(f)]
    if mode == "ISTIO_MUTUAL":
        for field in certs:
            r.error(tls.at(field), f"ISTIO_MUTUAL TLS cannot have associated {field}")
        return
    if mode in ("PASSTHROUGH", "AUTO_PASSTHROUGH") and (certs or tls.get("caCrl")):
        r.warn(tls.path, f"{mode} mode does not use certificates, they will be ignored")
    sources = sum([bool(tls.get("serverCertificate") and tls.get("privateKey")), bool(tls.get("credentialName")),
                   bool(tls.get("credentialNames")), bool(tls.get("tlsCertificates"))])
    if sources > 1:
        r.error(tls.path, "only one of credential_name, credential_names, server_certificate/private_key, "
                          "tls_certificates should be specified")
    if mode in ("SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"):
        prefix = "SIMPLE TLS" if mode == "SIMPLE" else "MUTUAL TLS"
        if not (tls.get("credentialName") or tls.get("credentialNames")):
            if mode != "SIMPLE" and not tls.get("caCertificates"):
                r.error(tls.at("caCertificates"), f"{prefix} requires a client CA bundle")
            pairs = _msgs(tls.get("tlsCertificates")) or [tls]
            for pair in pairs:
                if not pair.get("serverCertificate"):
                    r.error(pair.at("serverCertificate"), f"{prefix} requires a server certificate")
                if not pair.get("privateKey"):
                    r.error(pair.at("privateKey"), f"{prefix} requires a private key")
    if tls.get("caCrl"):
        if tls.get("credentialName"):
            r.error(tls.at("caCrl"), "CRL is not supported with credentialName. CRL has to be specified in the "
                                     "credential")
        if mode == "SIMPLE":
            r.error(tls.at("caCrl"), "CRL is not supported with SIMPLE TLS")
