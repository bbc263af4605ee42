"""Configuration: Athens' TOML keys and environment variables, checked once at start.

An Athens user's ``athens.toml`` loads unchanged: the keys are Athens' PascalCase
names, keys athens-trio does not implement are ignored, and Athens' environment
variables override the file.  Every bad value raises :class:`ConfigError` naming the
key (or the environment variable) it came from, so a typo fails at start, not on the
first request.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import platformdirs
from msgspec import field

from ._exceptions import ConfigError

__all__ = [
    "Config",
    "DiskStorageConfig",
    "S3StorageConfig",
    "StorageConfig",
    "default_disk_root",
    "load_config",
    "parse_listen_address",
]

logger = logging.getLogger("athens_trio.config")

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
# Athens' time settings are whole seconds; fractions are accepted too (tests, mostly).
PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
StorageType = Literal["memory", "disk", "s3"]
NetworkMode = Literal["strict", "offline", "fallback"]
LogFormat = Literal["plain", "json"]
LogLevel = Literal["trace", "debug", "info", "warn", "warning", "error", "fatal", "panic"]


def default_disk_root() -> str:
    """Where disk storage lives when nobody says: a per-user data directory, so what a
    first run fetched is still there on the second."""
    return str(Path(platformdirs.user_data_dir("athens-trio")) / "storage")


class DiskStorageConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    root_path: str = msgspec.field(default_factory=default_disk_root)


# --- [Storage.S3]: Athens' keys, plus Prefix and the zip redirect -----------------------


class S3StorageConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    """``[Storage.S3]``: Athens' S3Config, plus a key prefix and the zip redirect."""

    region: str = ""
    key: str = ""
    secret: str = ""
    token: str = ""
    bucket: str = ""
    endpoint: str = ""
    force_path_style: bool = False
    use_default_configuration: bool = False
    credentials_endpoint: str = ""
    aws_container_credentials_relative_uri: str = field(
        name="AwsContainerCredentialsRelativeURI", default=""
    )
    # Not Athens keys.  Every object's key starts with Prefix ("" for the bucket's root).
    prefix: str = ""
    # Answer a stored zip with a redirect to a presigned URL valid RedirectExpiry seconds.
    redirect_zips: bool = False
    redirect_expiry: Annotated[int, msgspec.Meta(ge=1, le=7 * 24 * 3600)] = 300


def _as_bool(value: str) -> bool:
    # As Go's strconv.ParseBool, which Athens' envconfig uses.
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise ValueError("expected true or false")


_S3_ENVIRONMENT: list[tuple[tuple[str, ...], Callable[[str], Any], tuple[str, ...]]] = [
    (("Storage", "S3", name), parse, (var,))
    for name, parse, var in (
        ("Region", str, "AWS_REGION"),
        ("Key", str, "AWS_ACCESS_KEY_ID"),
        ("Secret", str, "AWS_SECRET_ACCESS_KEY"),
        ("Token", str, "AWS_SESSION_TOKEN"),
        ("Bucket", str, "ATHENS_S3_BUCKET_NAME"),
        ("Endpoint", str, "AWS_ENDPOINT"),
        ("ForcePathStyle", _as_bool, "AWS_FORCE_PATH_STYLE"),
        ("UseDefaultConfiguration", _as_bool, "AWS_USE_DEFAULT_CONFIGURATION"),
        ("CredentialsEndpoint", str, "AWS_CREDENTIALS_ENDPOINT"),
        (
            "AwsContainerCredentialsRelativeURI",
            str,
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        ),
        ("Prefix", str, "ATHENS_S3_PREFIX"),
        ("RedirectZips", _as_bool, "ATHENS_S3_REDIRECT_ZIPS"),
        ("RedirectExpiry", int, "ATHENS_S3_REDIRECT_EXPIRY"),
    )
]


def _check_s3(
    s3: S3StorageConfig,
    key_name: Callable[[tuple[str, ...]], str],
    needed_by: str = "StorageType s3",
) -> None:
    """What StorageType s3 (or SingleFlightType s3) needs: a bucket, a region, an
    http(s) endpoint if any, and one way to credentials."""

    def fail(name: str, message: str) -> ConfigError:
        return ConfigError(key_name(("Storage", "S3", name)), message)

    if not s3.bucket:
        raise fail("Bucket", f"{needed_by} needs a bucket")
    if not s3.region:
        raise fail("Region", f"{needed_by} needs a region")
    if s3.endpoint and not re.fullmatch(r"https?://[^/?#\s]+/?", s3.endpoint):
        raise fail("Endpoint", f"{s3.endpoint!r} is not an http(s) URL of a host")
    if s3.key and not s3.secret:
        raise fail("Secret", "Key is set without its Secret")
    if s3.secret and not s3.key:
        raise fail("Key", "Secret is set without its Key")
    if not (s3.use_default_configuration or s3.key or s3.credentials_endpoint):
        raise fail(
            "Key",
            f"{needed_by} needs credentials: Key and Secret, UseDefaultConfiguration "
            "or CredentialsEndpoint",
        )


# --- end of [Storage.S3] --------------------------------------------------------------


class StorageConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    disk: DiskStorageConfig = msgspec.field(default_factory=DiskStorageConfig)
    s3: S3StorageConfig = msgspec.field(name="S3", default_factory=S3StorageConfig)


# --- [SingleFlight]: one fetch per version across replicas (Athens' keys and variables) ---
SingleFlightType = Literal["memory", "redis", "redis-sentinel", "s3"]


class RedisLockConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    # Athens' names, seconds.  TTL is the lock's lease, refreshed while the fetch runs
    # (Athens' lock is not refreshed, hence its 900): a dead holder's lock is taken over
    # within it.  Timeout bounds each Redis call.  MaxRetries bounds how many dead
    # holders a waiter outlives, never how long it waits for a live one.
    ttl: PositiveInt = field(name="TTL", default=30)
    timeout: PositiveInt = 15
    max_retries: PositiveInt = 10


class RedisSingleFlightConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    # host:port or redis[s]://[user:password@]host:port/db
    endpoint: str = "127.0.0.1:6379"
    password: str = ""
    lock_config: RedisLockConfig = msgspec.field(default_factory=RedisLockConfig)


class RedisSentinelSingleFlightConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    endpoints: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:26379"])
    master_name: str = "redis-1"
    sentinel_password: str = ""
    redis_username: str = ""
    redis_password: str = ""
    db: Annotated[int, msgspec.Meta(ge=0)] = field(name="DB", default=0)
    lock_config: RedisLockConfig = msgspec.field(default_factory=RedisLockConfig)


class S3SingleFlightConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    # Athens' [SingleFlight.S3]: the lock objects live in [Storage.S3]'s bucket.  The
    # same meanings as RedisLockConfig's (Athens' TTL of 900 is for a lease nobody
    # refreshes; this one is refreshed, so short).  Timeout bounds each S3 call.
    ttl: PositiveInt = field(name="TTL", default=30)
    timeout: PositiveInt = 15
    max_retries: PositiveInt = 10


class SingleFlightConfig(msgspec.Struct, rename="pascal", forbid_unknown_fields=False):
    redis: RedisSingleFlightConfig = msgspec.field(default_factory=RedisSingleFlightConfig)
    redis_sentinel: RedisSentinelSingleFlightConfig = msgspec.field(
        default_factory=RedisSentinelSingleFlightConfig
    )
    s3: S3SingleFlightConfig = msgspec.field(name="S3", default_factory=S3SingleFlightConfig)


#: An environment variable's entry: the key path it sets, its parser, its names.
_Variable = tuple[tuple[str, ...], Callable[[str], Any], tuple[str, ...]]


def _lock_variables(section: str) -> list[_Variable]:
    # Athens reads the same ATHENS_REDIS_LOCK_* variables into both sections.
    return [
        (("SingleFlight", section, "LockConfig", "TTL"), int, ("ATHENS_REDIS_LOCK_TTL",)),
        (("SingleFlight", section, "LockConfig", "Timeout"), int, ("ATHENS_REDIS_LOCK_TIMEOUT",)),
        (
            ("SingleFlight", section, "LockConfig", "MaxRetries"),
            int,
            ("ATHENS_REDIS_LOCK_MAX_RETRIES",),
        ),
    ]


_SINGLE_FLIGHT_ENVIRONMENT: list[_Variable] = [
    (("SingleFlightType",), str, ("ATHENS_SINGLE_FLIGHT_TYPE",)),
    (("SingleFlight", "Redis", "Endpoint"), str, ("ATHENS_REDIS_ENDPOINT",)),
    (("SingleFlight", "Redis", "Password"), str, ("ATHENS_REDIS_PASSWORD",)),
    *_lock_variables("Redis"),
    (
        ("SingleFlight", "RedisSentinel", "Endpoints"),
        lambda value: [item.strip() for item in value.split(",") if item.strip()],
        ("ATHENS_REDIS_SENTINEL_ENDPOINTS",),
    ),
    (("SingleFlight", "RedisSentinel", "MasterName"), str, ("ATHENS_REDIS_SENTINEL_MASTER_NAME",)),
    (
        ("SingleFlight", "RedisSentinel", "SentinelPassword"),
        str,
        ("ATHENS_REDIS_SENTINEL_PASSWORD",),
    ),
    (("SingleFlight", "RedisSentinel", "RedisUsername"), str, ("ATHENS_REDIS_USERNAME",)),
    # As Athens: one variable for the plain Redis's password and the sentinel master's.
    (("SingleFlight", "RedisSentinel", "RedisPassword"), str, ("ATHENS_REDIS_PASSWORD",)),
    (("SingleFlight", "RedisSentinel", "DB"), int, ("ATHENS_REDIS_SENTINEL_DB",)),
    *_lock_variables("RedisSentinel"),
    (("SingleFlight", "S3", "TTL"), int, ("ATHENS_S3_LOCK_TTL",)),
    (("SingleFlight", "S3", "Timeout"), int, ("ATHENS_S3_LOCK_TIMEOUT",)),
    (("SingleFlight", "S3", "MaxRetries"), int, ("ATHENS_S3_LOCK_MAX_RETRIES",)),
]
# --- end of [SingleFlight] ---


class Config(msgspec.Struct, rename="pascal", forbid_unknown_fields=False, kw_only=True):
    """What athens-trio reads from ``athens.toml``; the field names map to Athens' keys."""

    port: str = ":3000"
    storage_type: StorageType = "disk"
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    go_binary: str = "go"
    # Athens' default: fetch straight from the VCS, never through another proxy.
    go_binary_env_vars: list[str] = msgspec.field(default_factory=lambda: ["GOPROXY=direct"])
    go_get_workers: PositiveInt = 10
    protocol_workers: PositiveInt = 30
    # Seconds.  Timeout bounds upstream listing; StashTimeout bounds one fetch.
    timeout: PositiveSeconds = 300
    stash_timeout: PositiveSeconds = 600
    # Not an Athens key.  Seconds a list, @latest or query resolution is remembered
    # (the max-age its answer carries); "does not exist" for at most 10 s; 0: never.
    list_cache_ttl: Annotated[int, msgspec.Meta(ge=0)] = field(name="ListCacheTTL", default=60)
    # Where the fetcher's temporary GOPATHs go; "": see go_get_root.
    go_get_dir: str = ""
    # Not Athens keys.  A module needing a newer go than GoBinary gets a go toolchain
    # (downloaded once from GoToolchainProxy, kept in GoToolchainDir: "" means
    # <GoGetDir (or its default)>/athens-trio-toolchains; GoToolchainProxy = "off":
    # only the toolchains already there); GoToolchainSwitch = false: such a zip is a 502.
    go_toolchain_switch: bool = True
    go_toolchain_dir: str = ""
    go_toolchain_proxy: str = "https://proxy.golang.org"
    # Seconds in-flight requests get to finish once a shutdown starts.
    shutdown_timeout: Seconds = 60
    # What list and latest do when upstream fails: strict | offline | fallback.
    network_mode: NetworkMode = "strict"
    log_level: LogLevel = "info"
    log_format: LogFormat = "plain"

    # --- download policy (Athens' names and semantics) ---
    # sync | async | redirect | async_redirect | none | file:<path> | custom:<base64 HCL>
    download_mode: str = "sync"
    download_url: str = field(name="DownloadURL", default="")
    filter_file: str = ""
    global_endpoint: str = "http://localhost:3001"
    validator_hook: str = ""
    sum_dbs: list[str] = field(name="SumDBs", default_factory=lambda: ["https://sum.golang.org"])
    no_sum_patterns: list[str] = field(default_factory=list)
    netrc_path: str = field(name="NETRCPath", default="")
    hgrc_path: str = field(name="HGRCPath", default="")
    github_token: str = ""

    # --- listening and operating ---
    unix_socket: str = ""  # wins over Port
    path_prefix: str = ""
    tls_cert_file: str = field(name="TLSCertFile", default="")
    tls_key_file: str = field(name="TLSKeyFile", default="")
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    # Not Athens keys (Go's http.Server has these built in); seconds and counts.
    keep_alive_timeout: PositiveSeconds = 5
    request_header_timeout: PositiveSeconds = 10
    # Per stall, not per response: a zip to a slow client may take longer than this.
    write_timeout: PositiveSeconds = 60
    max_connections: PositiveInt = 1000
    # Not an Athens key: the disk one fetch (its temporary GOPATH) may use; 0: unbounded.
    max_fetch_bytes: Annotated[int, msgspec.Meta(ge=0)] = 2 << 30

    # --- [SingleFlight] (see SingleFlightConfig) ---
    single_flight_type: SingleFlightType = "memory"
    single_flight: SingleFlightConfig = msgspec.field(default_factory=SingleFlightConfig)
    # --- overload: bounded queues, abandoned fetches (not Athens keys) ---
    # Requests for uncached modules that may wait for a ProtocolWorkers slot (what
    # storage answers takes none); one more is answered 503 with Retry-After.
    protocol_queue: Annotated[int, msgspec.Meta(ge=0)] = 1000
    # Fetches that may wait for a GoGetWorkers slot; one more: 503 with Retry-After.
    go_get_queue: Annotated[int, msgspec.Meta(ge=0)] = 100
    # Background fetches (DownloadMode async, async_redirect) queued or running; a miss
    # beyond them starts none (logged and counted).
    background_fetch_queue: Annotated[int, msgspec.Meta(ge=0)] = 100
    # Seconds a fetch goes on once no client waits for it; then it is cancelled.
    abandoned_fetch_grace: Seconds = 5
    # --- prefetch (not Athens keys) ---
    # Go.mod parts fetched at once ahead of the client (what served go.mod files
    # require, where go reads them; on by default: it hides the upstream's round trips
    # from a go walking a graph); 0: off.  How many levels below a served go.mod.
    prefetch_workers: Annotated[int, msgspec.Meta(ge=0)] = 8
    prefetch_depth: PositiveInt = 5

    # --- the hot path (not Athens keys) ---
    # Bytes of stored .info and .mod files kept in memory (each up to 1 MiB; a stored
    # version never changes); 0: none, every hit reads storage.
    stored_file_cache_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 << 20
    # Server processes on the one listening socket (the command only); 0: one per core.
    # (serve() in a program is always one process.)
    workers: Annotated[int, msgspec.Meta(ge=0)] = 0

    @property
    def disk_root(self) -> Path:
        return Path(self.storage.disk.root_path).expanduser()

    @property
    def go_get_root(self) -> Path:
        """GoGetDir, or where it defaults to: ``.goget`` in disk storage's root (the
        same filesystem, so a fetched zip is renamed into the tree, not copied; a dot:
        never a module path), the system temp dir for memory storage."""
        if self.go_get_dir:
            return Path(self.go_get_dir).expanduser()
        if self.storage_type == "disk":
            return self.disk_root / ".goget"
        return Path(tempfile.gettempdir())

    @property
    def basic_auth_enabled(self) -> bool:
        """As in Athens: on only when both the user and the password are set."""
        return bool(self.basic_auth_user and self.basic_auth_pass)

    def go_env_overrides(self) -> dict[str, str]:
        """GoBinaryEnvVars as a mapping, later entries winning."""
        return dict(entry.split("=", 1) for entry in self.go_binary_env_vars)


_ENV_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)


def _split_env_list(value: str) -> list[str]:
    # As Athens' EnvList: ';'-separated, each entry trimmed (an empty one is an error).
    return [item.strip() for item in value.split(";")]


def _as_int(value: str) -> int:
    return int(value.strip())


def _as_seconds(value: str) -> float:
    return float(value.strip())


def _split_commas(value: str) -> list[str]:
    # envconfig's []string: ','-separated.
    return [item.strip() for item in value.split(",") if item.strip()]


# Athens' environment variables: the key path each overrides, how its value is read,
# and the names it is looked up by, first found wins (Athens' envconfig tries
# ATHENS_<name> before a bare name such as GO_BINARY_PATH or PORT).
_ENVIRONMENT: list[tuple[tuple[str, ...], Callable[[str], Any], tuple[str, ...]]] = [
    (("Port",), str, ("ATHENS_PORT", "PORT")),
    (("StorageType",), str, ("ATHENS_STORAGE_TYPE",)),
    (("Storage", "Disk", "RootPath"), str, ("ATHENS_DISK_STORAGE_ROOT",)),
    (("GoBinary",), str, ("ATHENS_GO_BINARY_PATH", "GO_BINARY_PATH")),
    (("GoBinaryEnvVars",), _split_env_list, ("ATHENS_GO_BINARY_ENV_VARS",)),
    (("GoGetWorkers",), _as_int, ("ATHENS_GOGET_WORKERS",)),
    (("ProtocolWorkers",), _as_int, ("ATHENS_PROTOCOL_WORKERS",)),
    (("Timeout",), _as_seconds, ("ATHENS_TIMEOUT",)),
    (("StashTimeout",), _as_seconds, ("ATHENS_STASH_TIMEOUT",)),
    (("ListCacheTTL",), _as_int, ("ATHENS_LIST_CACHE_TTL",)),
    (("GoGetDir",), str, ("ATHENS_GOGET_DIR",)),
    (("GoToolchainSwitch",), _as_bool, ("ATHENS_GO_TOOLCHAIN_SWITCH",)),
    (("GoToolchainDir",), str, ("ATHENS_GO_TOOLCHAIN_DIR",)),
    (("GoToolchainProxy",), str, ("ATHENS_GO_TOOLCHAIN_PROXY",)),
    (("ShutdownTimeout",), _as_seconds, ("ATHENS_SHUTDOWN_TIMEOUT",)),
    (("NetworkMode",), str, ("ATHENS_NETWORK_MODE",)),
    (("LogLevel",), str, ("ATHENS_LOG_LEVEL",)),
    (("LogFormat",), str, ("ATHENS_LOG_FORMAT",)),
    (("DownloadMode",), str, ("ATHENS_DOWNLOAD_MODE",)),
    (("DownloadURL",), str, ("ATHENS_DOWNLOAD_URL",)),
    (("FilterFile",), str, ("ATHENS_FILTER_FILE",)),
    (("GlobalEndpoint",), str, ("ATHENS_GLOBAL_ENDPOINT",)),
    (("ValidatorHook",), str, ("ATHENS_PROXY_VALIDATOR",)),
    (("SumDBs",), _split_commas, ("ATHENS_SUM_DBS",)),
    (("NoSumPatterns",), _split_commas, ("ATHENS_GONOSUM_PATTERNS",)),
    (("NETRCPath",), str, ("ATHENS_NETRC_PATH",)),
    (("HGRCPath",), str, ("ATHENS_HGRC_PATH",)),
    (("GithubToken",), str, ("ATHENS_GITHUB_TOKEN",)),
    (("UnixSocket",), str, ("ATHENS_UNIX_SOCKET",)),
    (("PathPrefix",), str, ("ATHENS_PATH_PREFIX",)),
    (("TLSCertFile",), str, ("ATHENS_TLSCERT_FILE",)),
    (("TLSKeyFile",), str, ("ATHENS_TLSKEY_FILE",)),
    (("BasicAuthUser",), str, ("ATHENS_BASIC_AUTH_USER", "BASIC_AUTH_USER")),
    (("BasicAuthPass",), str, ("ATHENS_BASIC_AUTH_PASS", "BASIC_AUTH_PASS")),
    (("KeepAliveTimeout",), _as_seconds, ("ATHENS_KEEP_ALIVE_TIMEOUT",)),
    (("RequestHeaderTimeout",), _as_seconds, ("ATHENS_REQUEST_HEADER_TIMEOUT",)),
    (("WriteTimeout",), _as_seconds, ("ATHENS_WRITE_TIMEOUT",)),
    (("MaxConnections",), _as_int, ("ATHENS_MAX_CONNECTIONS",)),
    (("ProtocolQueue",), _as_int, ("ATHENS_PROTOCOL_QUEUE",)),
    (("GoGetQueue",), _as_int, ("ATHENS_GOGET_QUEUE",)),
    (("BackgroundFetchQueue",), _as_int, ("ATHENS_BACKGROUND_FETCH_QUEUE",)),
    (("AbandonedFetchGrace",), _as_seconds, ("ATHENS_ABANDONED_FETCH_GRACE",)),
    *_S3_ENVIRONMENT,
    (("PrefetchWorkers",), _as_int, ("ATHENS_PREFETCH_WORKERS",)),
    (("PrefetchDepth",), _as_int, ("ATHENS_PREFETCH_DEPTH",)),
    (("MaxFetchBytes",), _as_int, ("ATHENS_MAX_FETCH_BYTES",)),
    (("StoredFileCacheBytes",), _as_int, ("ATHENS_STORED_FILE_CACHE_BYTES",)),
    (("Workers",), _as_int, ("ATHENS_WORKERS",)),
]
_ENVIRONMENT += _SINGLE_FLIGHT_ENVIRONMENT

_ERROR_PATH = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`$")


def load_config(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read ``path`` (TOML; None means defaults only), then apply Athens' environment
    variables from ``environ`` (default ``os.environ``)."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read config file: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), f"not valid TOML: {exc}") from exc

    env = os.environ if environ is None else environ
    origin: dict[tuple[str, ...], str] = {}  # key path -> env var that set it
    for key_path, parse, names in _ENVIRONMENT:
        var = next((name for name in names if env.get(name)), None)
        if var is None:
            continue
        try:
            value = parse(env[var])
        except ValueError as exc:
            raise ConfigError(var, f"{env[var]!r} is not valid: {exc}") from exc
        _set_path(raw, key_path, value)
        origin[key_path] = var

    _warn_about_ignored_keys(raw)
    # Athens reads these case-insensitively.
    for key in ("StorageType", "NetworkMode", "LogLevel", "LogFormat"):
        if isinstance(raw.get(key), str):
            raw[key] = raw[key].strip().lower()

    def key_name(key_path: tuple[str, ...]) -> str:
        key = ".".join(key_path) or "config"
        for prefix_len in range(len(key_path), 0, -1):
            if key_path[:prefix_len] in origin:
                return f"{origin[key_path[:prefix_len]]} ({key})"
        return key

    try:
        config = msgspec.convert(raw, Config)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _ERROR_PATH.search(message)
        key_path = tuple(re.findall(r"\.(\w+)", match.group(1))) if match else ()
        reason = message[: match.start()] if match else message
        raise ConfigError(key_name(key_path), reason) from exc

    for key, seconds in _seconds(config).items():
        if not math.isfinite(seconds):
            raise ConfigError(key_name((key,)), f"{seconds} is not a number of seconds")
    for entry in config.go_binary_env_vars:
        if not _ENV_ENTRY.fullmatch(entry):
            raise ConfigError(
                key_name(("GoBinaryEnvVars",)), f"{entry!r} is not of the form NAME=value"
            )
    try:
        parse_listen_address(config.port)
    except ValueError as exc:
        raise ConfigError(key_name(("Port",)), str(exc)) from None
    if not _DOWNLOAD_MODE.fullmatch(config.download_mode):
        raise ConfigError(
            key_name(("DownloadMode",)),
            f"{config.download_mode!r} is not sync, async, redirect, async_redirect, none, "
            "file:<path> or custom:<base64 HCL>",
        )
    if config.download_mode in ("redirect", "async_redirect") and not config.download_url:
        raise ConfigError(
            key_name(("DownloadURL",)), f"DownloadMode {config.download_mode} needs it"
        )
    from ._sumdb import parse_sum_db  # (with httpx: loaded by those who serve)

    for entry in config.sum_dbs:
        try:
            _name, url = parse_sum_db(entry)
        except ValueError as exc:
            raise ConfigError(key_name(("SumDBs",)), str(exc)) from None
        if not url.startswith("https://"):
            raise ConfigError(key_name(("SumDBs",)), f"{entry!r}: checksum databases must be https")
    if config.github_token and config.netrc_path:
        raise ConfigError(
            key_name(("GithubToken",)),
            "set GithubToken or NETRCPath, not both (both write a netrc)",
        )
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ConfigError(
            key_name(("TLSCertFile",) if not config.tls_cert_file else ("TLSKeyFile",)),
            "TLS needs both TLSCertFile and TLSKeyFile",
        )
    if config.go_toolchain_switch and config.go_toolchain_proxy.strip() in ("", "direct"):
        raise ConfigError(
            key_name(("GoToolchainProxy",)),
            "toolchains come from a module proxy: name one (or off: only those at hand)",
        )
    if config.path_prefix and not config.path_prefix.startswith("/"):
        raise ConfigError(key_name(("PathPrefix",)), f"{config.path_prefix!r} must start with /")
    if config.storage_type == "s3":
        _check_s3(config.storage.s3, key_name)
    elif config.single_flight_type == "s3":
        # Its lock objects live in [Storage.S3]'s bucket, as Athens' do.
        _check_s3(config.storage.s3, key_name, "SingleFlightType s3")
    return config


def _seconds(config: Config) -> dict[str, float]:
    """The time settings by key (msgspec's bounds let infinity through)."""
    return {
        "Timeout": config.timeout,
        "StashTimeout": config.stash_timeout,
        "ShutdownTimeout": config.shutdown_timeout,
        "KeepAliveTimeout": config.keep_alive_timeout,
        "RequestHeaderTimeout": config.request_header_timeout,
        "AbandonedFetchGrace": config.abandoned_fetch_grace,
    }


_DOWNLOAD_MODE = re.compile(r"sync|async|redirect|async_redirect|none|file:.+|custom:.+", re.DOTALL)


def parse_listen_address(port: str) -> tuple[str, int]:
    """Athens' ``Port`` as (host, port): ``:3000`` and ``3000`` listen on every
    interface, ``127.0.0.1:3000`` and ``[::1]:3000`` on one."""
    host, sep, number = port.strip().rpartition(":")
    if not sep:
        host = ""
    host = host.strip("[]") or "0.0.0.0"
    if not number.isdigit() or not 0 <= int(number) <= 65535:
        raise ValueError(f"{port!r} is not a port: expected :3000, 3000 or host:3000")
    return host, int(number)


def _warn_about_ignored_keys(raw: Mapping[str, Any]) -> None:
    """Athens keys athens-trio does not implement are ignored, but said so once."""
    known = {f.encode_name for f in msgspec.structs.fields(Config)}
    ignored = sorted(key for key in raw if key not in known)
    if ignored:
        logger.warning("config: ignoring keys athens-trio lacks: %s", ", ".join(ignored))


def _set_path(raw: dict[str, Any], key_path: tuple[str, ...], value: Any) -> None:
    node = raw
    for key in key_path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[key_path[-1]] = value
