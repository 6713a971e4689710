"""Credential files: where credentialName is read, reload on change, a bad change keeping the old
certificate; and the subjectAltNames check of upstream certificates."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import pytest
import trustme

from proxy.tls.contexts import CertFiles, CredentialError, ServerSettings, server_context
from proxy.tls.credentials import Credential, credential_files, mesh_files
from proxy.tls.upstream import san_matches


def write(folder: Path, cert: trustme.LeafCert) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cert.cert_chain_pems[0].write_to_path(str(folder / "tls.crt"))
    cert.private_key_pem.write_to_path(str(folder / "tls.key"))


def test_credential_files_are_read_like_a_mounted_secret(tmp_path: Path) -> None:
    ca = trustme.CA()
    write(tmp_path / "gw", ca.issue_cert("a.example"))
    files = credential_files(str(tmp_path), "gw", want_ca=False)
    assert files == CertFiles(str(tmp_path / "gw" / "tls.crt"), str(tmp_path / "gw" / "tls.key"), "")
    with pytest.raises(CredentialError, match="mutual TLS needs a CA bundle"):
        credential_files(str(tmp_path), "gw", want_ca=True)
    (tmp_path / "gw-cacert").mkdir()  # Istio's separate NAME-cacert secret
    ca.cert_pem.write_to_path(str(tmp_path / "gw-cacert" / "ca.crt"))
    assert credential_files(str(tmp_path), "gw", want_ca=True).ca == str(tmp_path / "gw-cacert" / "ca.crt")
    with pytest.raises(CredentialError, match="tls.crt"):
        credential_files(str(tmp_path), "absent", want_ca=False)
    with pytest.raises(CredentialError, match="--mesh-certs"):
        mesh_files("")


def test_refresh_reloads_a_change_and_keeps_the_old_certificate_on_a_bad_one(tmp_path: Path) -> None:
    ca = trustme.CA()
    write(tmp_path / "gw", ca.issue_cert("a.example"))
    files = credential_files(str(tmp_path), "gw", want_ca=False)
    context = server_context(ServerSettings("SIMPLE", files))
    credential = Credential(context, files, server=True)
    assert credential.refresh() == (False, None)  # unchanged
    new = ca.issue_cert("a.example")
    write(tmp_path / "gw", new)
    os.utime(tmp_path / "gw" / "tls.crt", ns=(1, 1))  # a distinct stamp even within one clock tick
    assert credential.refresh() == (True, None)
    (tmp_path / "gw" / "tls.key").write_text("garbage")
    reloaded, problem = credential.refresh()
    assert not reloaded and problem is not None and "still using the previous certificate" in problem
    # the context still serves a handshake with the new certificate
    client = ssl.create_default_context()
    ca.configure_trust(client)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname="a.example")
    s = context.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side, outbox, other_in in ((c, c_out, s_in), (s, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                pass
            other_in.write(outbox.read())
    assert c.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(new.cert_chain_pems[0].bytes().decode())


@pytest.mark.parametrize(("names", "wanted", "ok"), [
    ((("DNS", "reviews.example"),), ("reviews.example",), True),
    ((("DNS", "Reviews.Example"),), ("reviews.example",), True),
    ((("URI", "spiffe://cluster.local/ns/default/sa/reviews"),), ("spiffe://cluster.local/ns/default/sa/reviews",),
     True),
    ((("DNS", "*.example"),), ("reviews.example",), True),
    ((("DNS", "*.example"),), ("a.reviews.example",), False),
    ((("DNS", "other.example"),), ("reviews.example",), False),
    ((), ("reviews.example",), False),
])
def test_subject_alt_names(names: tuple[tuple[str, str], ...], wanted: tuple[str, ...], ok: bool) -> None:
    assert san_matches({"subjectAltName": names}, wanted) is ok
