"""mTLS credentials for a workload, the way Istio's PeerAuthentication STRICT mode wants them.

A `WorkloadIdentity` holds a workload's certificate chain, its private key and the mesh's
root certificates (PEM). Its server credentials *require* a client certificate signed by those
roots (STRICT): a caller without one fails the handshake. The caller's identity then reaches
`ServerPolicy` as the certificate's SPIFFE URI SAN (`spiffe://cluster.local/ns/x/sa/y`), which
grpcio reports only when the certificate carries exactly one URI SAN.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, final

import attrs

from meshkit._errors import ConfigurationError
from meshkit._validate import instance_of, require

__all__ = ["WorkloadIdentity"]


def _pem(_inst: object, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    instance_of(bytes)(_inst, attribute, value)
    require(b"-----BEGIN " in value, attribute.name, value[:40], "must be PEM data")


@final
@attrs.frozen(kw_only=True)
class WorkloadIdentity:
    """A workload's mTLS identity: certificate chain, private key, trusted roots (PEM bytes).

    Attributes:
        certificate_chain: The workload's certificate (and intermediates), PEM.
        private_key: The certificate's private key, PEM.
        root_certificates: The CA certificates that sign the mesh's workloads, PEM.
    """

    certificate_chain: bytes = attrs.field(validator=_pem, repr=False)
    private_key: bytes = attrs.field(validator=_pem, repr=False)
    root_certificates: bytes = attrs.field(validator=_pem, repr=False)

    @classmethod
    def from_files(
        cls, certificate_chain: str | Path, private_key: str | Path, root_certificates: str | Path
    ) -> WorkloadIdentity:
        """Read the three PEM files (as Istio or cert-manager mount them).

        Raises:
            ConfigurationError: If a file cannot be read or is not PEM.
        """
        paths = {
            "certificate_chain": certificate_chain,
            "private_key": private_key,
            "root_certificates": root_certificates,
        }
        data: dict[str, bytes] = {}
        for field, path in paths.items():
            try:
                data[field] = Path(path).read_bytes()
            except (OSError, TypeError, ValueError) as exc:
                raise ConfigurationError(field, path, f"cannot be read: {exc}") from exc
        return cls(**data)

    def server_credentials(self) -> Any:  # noqa: ANN401 - grpc.ServerCredentials; grpcio is optional
        """Return server credentials that require a client certificate (STRICT mTLS)."""
        import grpc  # noqa: PLC0415 - optional dependency

        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=True,
        )

    def channel_credentials(self) -> Any:  # noqa: ANN401 - grpc.ChannelCredentials
        """Return channel credentials presenting this workload's certificate."""
        import grpc  # noqa: PLC0415 - optional dependency

        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )
