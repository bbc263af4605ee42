"""Config: Athens' keys and environment variables, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from athens_trio import ConfigError, load_config
from athens_trio._config import default_disk_root, parse_listen_address

# An Athens config.dev.toml, trimmed: keys athens-trio lacks must not stop it loading.
ATHENS_TOML = """
GoBinary = "/usr/local/go/bin/go"
GoEnv = "development"
GoBinaryEnvVars = ["GOPROXY=direct", "GONOSUMDB=corp.example.com"]
GoGetWorkers = 4
GoGetDir = "/var/tmp/athens"
ProtocolWorkers = 12
LogLevel = "Debug"
CloudRuntime = "none"
Timeout = 120
StashTimeout = 900
StorageType = "disk"
Port = ":3001"
NetworkMode = "fallback"
DownloadMode = "sync"
SingleFlightType = "memory"

[Storage]
    [Storage.Disk]
        RootPath = "/srv/athens"
    [Storage.Mongo]
        URL = "mongodb://127.0.0.1:27017"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "athens.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(environ={})
    assert config.port == ":3000"
    assert config.storage_type == "disk"
    assert config.storage.disk.root_path == default_disk_root()
    assert config.go_binary == "go"
    assert config.go_binary_env_vars == ["GOPROXY=direct"]
    assert (config.go_get_workers, config.protocol_workers) == (10, 30)
    assert (config.timeout, config.stash_timeout) == (300, 600)
    assert config.network_mode == "strict"


def test_an_athens_toml_loads_unchanged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load_config(write(tmp_path, ATHENS_TOML), environ={})
    assert config.go_binary == "/usr/local/go/bin/go"
    assert config.go_env_overrides() == {"GOPROXY": "direct", "GONOSUMDB": "corp.example.com"}
    assert (config.go_get_workers, config.protocol_workers) == (4, 12)
    assert (config.timeout, config.stash_timeout) == (120, 900)
    assert config.disk_root == Path("/srv/athens")
    assert config.port == ":3001"
    assert config.network_mode == "fallback"
    assert config.log_level == "debug"
    assert "CloudRuntime" in caplog.text
    # Read now (tests/test_replicas.py), no longer ignored.
    assert config.single_flight_type == "memory"
    assert "SingleFlightType" not in caplog.text


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    environ = {
        "ATHENS_PORT": "127.0.0.1:4000",
        "ATHENS_STORAGE_TYPE": "memory",
        "ATHENS_DISK_STORAGE_ROOT": "/data",
        "GO_BINARY_PATH": "/opt/go/bin/go",
        "ATHENS_GO_BINARY_ENV_VARS": "GOPROXY=https://proxy.corp,direct; GOPRIVATE=corp.io",
        "ATHENS_GOGET_WORKERS": "2",
        "ATHENS_PROTOCOL_WORKERS": "3",
        "ATHENS_TIMEOUT": "5",
        "ATHENS_STASH_TIMEOUT": "6",
        "ATHENS_GOGET_DIR": "/scratch",
        "ATHENS_NETWORK_MODE": "offline",
    }
    config = load_config(write(tmp_path, ATHENS_TOML), environ=environ)
    assert config.port == "127.0.0.1:4000"
    assert config.storage_type == "memory"
    assert config.disk_root == Path("/data")
    assert config.go_binary == "/opt/go/bin/go"
    assert config.go_binary_env_vars == ["GOPROXY=https://proxy.corp,direct", "GOPRIVATE=corp.io"]
    assert (config.go_get_workers, config.protocol_workers) == (2, 3)
    assert (config.timeout, config.stash_timeout) == (5, 6)
    assert config.go_get_dir == "/scratch"
    assert config.network_mode == "offline"


def test_time_settings_take_fractions_of_a_second(tmp_path: Path) -> None:
    text = "Timeout = 0.5\nStashTimeout = 1.5\nShutdownTimeout = 0\nKeepAliveTimeout = 0.2\n"
    config = load_config(write(tmp_path, text), environ={"ATHENS_REQUEST_HEADER_TIMEOUT": " 0.25 "})
    assert (config.timeout, config.stash_timeout, config.shutdown_timeout) == (0.5, 1.5, 0)
    assert (config.keep_alive_timeout, config.request_header_timeout) == (0.2, 0.25)


def test_athens_prefixed_names_win_and_bare_port_works() -> None:
    config = load_config(
        environ={"ATHENS_GO_BINARY_PATH": "/a/go", "GO_BINARY_PATH": "/b/go", "PORT": "8080"}
    )
    assert config.go_binary == "/a/go"
    assert parse_listen_address(config.port) == ("0.0.0.0", 8080)


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"ATHENS_GOGET_WORKERS": "many"}, "ATHENS_GOGET_WORKERS"),
        ({"ATHENS_GOGET_WORKERS": "0"}, "ATHENS_GOGET_WORKERS (GoGetWorkers)"),
        ({"ATHENS_TIMEOUT": "-1"}, "ATHENS_TIMEOUT (Timeout)"),
        ({"ATHENS_TIMEOUT": "soon"}, "ATHENS_TIMEOUT"),
        ({"ATHENS_STASH_TIMEOUT": "inf"}, "ATHENS_STASH_TIMEOUT (StashTimeout)"),
        ({"ATHENS_SHUTDOWN_TIMEOUT": "nan"}, "ATHENS_SHUTDOWN_TIMEOUT (ShutdownTimeout)"),
        ({"ATHENS_STORAGE_TYPE": "mongo"}, "ATHENS_STORAGE_TYPE (StorageType)"),
        ({"ATHENS_NETWORK_MODE": "sometimes"}, "ATHENS_NETWORK_MODE (NetworkMode)"),
        ({"ATHENS_PORT": "three thousand"}, "ATHENS_PORT (Port)"),
        (
            {"ATHENS_GO_BINARY_ENV_VARS": "GOPROXY=direct;"},
            "ATHENS_GO_BINARY_ENV_VARS (GoBinaryEnvVars)",
        ),
    ],
)
def test_bad_environment_values_name_the_variable(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=environ)
    assert caught.value.key == key
    assert str(caught.value).startswith(key)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("GoGetWorkers = 'ten'", "GoGetWorkers"),
        ("ProtocolWorkers = 0", "ProtocolWorkers"),
        ("StorageType = 'mongo'", "StorageType"),
        ("[Storage.Disk]\nRootPath = 7", "Storage.Disk.RootPath"),
        ("GoBinaryEnvVars = ['NOEQUALS']", "GoBinaryEnvVars"),
        ("Port = ':99999'", "Port"),
        ("Timeout = 0", "Timeout"),
        ("KeepAliveTimeout = -0.5", "KeepAliveTimeout"),
        ("RequestHeaderTimeout = inf", "RequestHeaderTimeout"),
        ("ShutdownTimeout = '5s'", "ShutdownTimeout"),
    ],
)
def test_bad_file_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), environ={})
    assert caught.value.key == key


def test_unreadable_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "Port = "), environ={})


@pytest.mark.parametrize(
    ("port", "address"),
    [
        (":3000", ("0.0.0.0", 3000)),
        ("3000", ("0.0.0.0", 3000)),
        ("127.0.0.1:3000", ("127.0.0.1", 3000)),
        ("[::1]:0", ("::1", 0)),
    ],
)
def test_listen_address(port: str, address: tuple[str, int]) -> None:
    assert parse_listen_address(port) == address


def test_policy_and_operator_keys_load_with_athens_names(tmp_path: Path) -> None:
    text = """
DownloadMode = "redirect"
DownloadURL = "https://proxy.golang.org"
FilterFile = "/etc/athens/filter"
ValidatorHook = "http://127.0.0.1:9000/validate"
SumDBs = ["https://sum.golang.org", "https://sum.corp.example"]
NoSumPatterns = ["corp.example/*"]
NETRCPath = "/etc/athens/netrc"
UnixSocket = "/run/athens.sock"
PathPrefix = "/goproxy"
TLSCertFile = "/etc/tls/cert.pem"
TLSKeyFile = "/etc/tls/key.pem"
BasicAuthUser = "team"
BasicAuthPass = "secret"
LogFormat = "JSON"
"""
    config = load_config(write(tmp_path, text), environ={})
    assert config.download_mode == "redirect"
    assert config.download_url == "https://proxy.golang.org"
    assert config.sum_dbs == ["https://sum.golang.org", "https://sum.corp.example"]
    assert config.no_sum_patterns == ["corp.example/*"]
    assert config.netrc_path == "/etc/athens/netrc"
    assert (config.tls_cert_file, config.tls_key_file) == ("/etc/tls/cert.pem", "/etc/tls/key.pem")
    assert config.basic_auth_enabled
    assert config.log_format == "json"
    env = load_config(
        environ={
            "ATHENS_SUM_DBS": (
                "https://a.example, sum.golang.org https://proxy.example/sumdb/sum.golang.org"
            ),
            "ATHENS_GONOSUM_PATTERNS": "x.example/*,y.example",
            "BASIC_AUTH_USER": "u",
            "ATHENS_PROXY_VALIDATOR": "http://127.0.0.1:1/v",
        }
    )
    assert env.sum_dbs == [
        "https://a.example",
        "sum.golang.org https://proxy.example/sumdb/sum.golang.org",
    ]
    assert env.no_sum_patterns == ["x.example/*", "y.example"]
    assert env.validator_hook == "http://127.0.0.1:1/v"
    assert not env.basic_auth_enabled  # a user without a password turns nothing on


@pytest.mark.parametrize(
    ("environ", "key"),
    [
        ({"ATHENS_DOWNLOAD_MODE": "sometimes"}, "ATHENS_DOWNLOAD_MODE (DownloadMode)"),
        ({"ATHENS_DOWNLOAD_MODE": "redirect"}, "DownloadURL"),
        ({"ATHENS_SUM_DBS": "http://sum.example"}, "ATHENS_SUM_DBS (SumDBs)"),
        ({"ATHENS_SUM_DBS": "sum.golang.org http://mirror.example"}, "ATHENS_SUM_DBS (SumDBs)"),
        ({"ATHENS_SUM_DBS": "sum/golang https://mirror.example"}, "ATHENS_SUM_DBS (SumDBs)"),
        ({"ATHENS_SUM_DBS": "a b https://mirror.example"}, "ATHENS_SUM_DBS (SumDBs)"),
        ({"ATHENS_SUM_DBS": "sum.golang.org mirror.example"}, "ATHENS_SUM_DBS (SumDBs)"),
        (
            {"ATHENS_GITHUB_TOKEN": "t", "ATHENS_NETRC_PATH": "/n"},
            "ATHENS_GITHUB_TOKEN (GithubToken)",
        ),
        ({"ATHENS_TLSCERT_FILE": "/c"}, "TLSKeyFile"),
        ({"ATHENS_PATH_PREFIX": "goproxy"}, "ATHENS_PATH_PREFIX (PathPrefix)"),
        ({"ATHENS_LOG_FORMAT": "xml"}, "ATHENS_LOG_FORMAT (LogFormat)"),
    ],
)
def test_bad_policy_values_name_the_key(environ: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(environ=environ)
    assert caught.value.key == key
