"""Tests for the ports of golang.org/x/mod/semver and golang.org/x/mod/module.

The tables are the test vectors of x/mod's own semver_test.go, module_test.go and
pseudo_test.go; the rest covers where athens-trio is stricter than Go, and hypothesis
properties of the escaping that storage relies on.
"""

from __future__ import annotations

import operator
import posixpath
import random
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from athens_trio import _module, _semver
from athens_trio._exceptions import InvalidPathError, InvalidRequestError, InvalidVersionError


def _go_escape(text: str) -> str:
    """Escape *text* the way Go does, independently of the code under test."""
    return re.sub("[A-Z]", lambda match: "!" + match[0].lower(), text)


# ---------------------------------------------------------------------------------------
# semver (semver_test.go)
# ---------------------------------------------------------------------------------------

# (input, canonical form or "" if invalid), in ascending order of precedence.
SEMVER_TESTS: list[tuple[str, str]] = [
    ("bad", ""),
    ("v1-alpha.beta.gamma", ""),
    ("v1-pre", ""),
    ("v1+meta", ""),
    ("v1-pre+meta", ""),
    ("v1.2-pre", ""),
    ("v1.2+meta", ""),
    ("v1.2-pre+meta", ""),
    ("v1.0.0-alpha", "v1.0.0-alpha"),
    ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
    ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
    ("v1.0.0-beta", "v1.0.0-beta"),
    ("v1.0.0-beta.2", "v1.0.0-beta.2"),
    ("v1.0.0-beta.11", "v1.0.0-beta.11"),
    ("v1.0.0-rc.1", "v1.0.0-rc.1"),
    ("v1", "v1.0.0"),
    ("v1.0", "v1.0.0"),
    ("v1.0.0", "v1.0.0"),
    ("v1.2", "v1.2.0"),
    ("v1.2.0", "v1.2.0"),
    ("v1.2.3-456", "v1.2.3-456"),
    ("v1.2.3-456.789", "v1.2.3-456.789"),
    ("v1.2.3-456-789", "v1.2.3-456-789"),
    ("v1.2.3-456a", "v1.2.3-456a"),
    ("v1.2.3-pre", "v1.2.3-pre"),
    ("v1.2.3-pre+meta", "v1.2.3-pre"),
    ("v1.2.3-pre.1", "v1.2.3-pre.1"),
    ("v1.2.3-zzz", "v1.2.3-zzz"),
    ("v1.2.3", "v1.2.3"),
    ("v1.2.3+meta", "v1.2.3"),
    ("v1.2.3+meta-pre", "v1.2.3"),
    ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
]

SEMVER_SORTED = [
    "bad",
    "v1+meta",
    "v1-alpha.beta.gamma",
    "v1-pre",
    "v1-pre+meta",
    "v1.2+meta",
    "v1.2-pre",
    "v1.2-pre+meta",
    "v1.0.0-alpha",
    "v1.0.0-alpha.1",
    "v1.0.0-alpha.beta",
    "v1.0.0-beta",
    "v1.0.0-beta.2",
    "v1.0.0-beta.11",
    "v1.0.0-rc.1",
    "v1",
    "v1.0",
    "v1.0.0",
    "v1.2",
    "v1.2.0",
    "v1.2.3-456",
    "v1.2.3-456.789",
    "v1.2.3-456-789",
    "v1.2.3-456a",
    "v1.2.3-pre",
    "v1.2.3-pre+meta",
    "v1.2.3-pre.1",
    "v1.2.3-zzz",
    "v1.2.3",
    "v1.2.3+meta",
    "v1.2.3+meta-pre",
    "v1.2.3+meta-pre.sha.256a",
]


@pytest.mark.parametrize(("version", "canonical"), SEMVER_TESTS)
def test_semver_accessors(version: str, canonical: str) -> None:
    assert _semver.is_valid(version) == (canonical != "")
    assert _semver.canonical(version) == canonical

    assert _semver.major(version) == canonical.partition(".")[0]

    expected_major_minor = ""
    if canonical:
        expected_major_minor = version.partition("+")[0].partition("-")[0]
        dots = expected_major_minor.count(".")
        if dots == 0:
            expected_major_minor += ".0"
        elif dots == 2:
            expected_major_minor = expected_major_minor.rpartition(".")[0]
    assert _semver.major_minor(version) == expected_major_minor

    expected_prerelease = ""
    if canonical and "-" in canonical:
        expected_prerelease = canonical[canonical.index("-") :]
    assert _semver.prerelease(version) == expected_prerelease

    expected_build = ""
    if canonical and "+" in version:
        expected_build = version[version.index("+") :]
    assert _semver.build(version) == expected_build


def test_semver_compare_and_max() -> None:
    for i, (v, v_canonical) in enumerate(SEMVER_TESTS):
        for j, (w, w_canonical) in enumerate(SEMVER_TESTS):
            # The table is in ascending order; equal canonical forms compare equal.
            expected = 0 if v_canonical == w_canonical else (-1 if i < j else 1)
            assert _semver.compare(v, w) == expected, (v, w)
            expected_max = _semver.canonical(w) if i < j else _semver.canonical(v)
            assert _semver.max_version(v, w) == expected_max, (v, w)


def test_semver_sort() -> None:
    versions = [version for version, _ in SEMVER_TESTS]
    random.Random(20180101).shuffle(versions)
    assert _semver.sort_versions(versions) == SEMVER_SORTED
    assert _semver.sort_versions(reversed(SEMVER_SORTED)) == SEMVER_SORTED


@pytest.mark.parametrize(
    "version",
    [
        "",
        "v",
        "1.2.3",
        "V1.2.3",
        "v01.2.3",
        "v1.02.3",
        "v1.2.03",
        "v1.2.3-01",
        "v1.2.3-",
        "v1.2.3-a..b",
        "v1.2.3+",
        "v1.2.3+a+b",
        "v1.2.3.4",
        "v1.2.3\n",
        "v\u0661.2.3",  # ARABIC-INDIC DIGIT ONE: a digit to str.isdigit, not to Go
        "v1.2.3-\u00e9",
    ],
)
def test_semver_invalid(version: str) -> None:
    assert not _semver.is_valid(version)
    assert _semver.canonical(version) == ""
    assert _semver.compare(version, "bad") == 0
    assert _semver.compare(version, "v0.0.0") == -1


def test_semver_compare_numeric_fields() -> None:
    assert _semver.compare("v1.10.0", "v1.9.0") == 1
    assert _semver.compare("v1.2.3-10", "v1.2.3-9") == 1
    assert _semver.compare("v1.2.3-9", "v1.2.3-a") == -1
    assert _semver.compare("v1.0.0+a", "v1.0.0+b") == 0
    assert _semver.compare("v12345678901234567890.0.0", "v9.0.0") == 1
    assert _semver.max_version("bad", "worse") == ""


# ---------------------------------------------------------------------------------------
# module paths (module_test.go)
# ---------------------------------------------------------------------------------------

# (path, valid module path): checkPathTests, module column.
CHECK_PATH_TESTS: list[tuple[str, bool]] = [
    ("x.y/z", True),
    ("x.y", True),
    ("", False),
    ("x.y/\udcffz", False),  # Go's "x.y/\xFFz": an undecodable byte, via surrogateescape
    ("/x.y/z", False),
    ("x./z", False),
    (".x/z", False),
    ("-x/z", False),
    ("x..y/z", True),
    ("x.y/z/../../w", False),
    ("x.y//z", False),
    ("x.y/z//w", False),
    ("x.y/z/", False),
    ("x.y/z/v0", False),
    ("x.y/z/v1", False),
    ("x.y/z/v2", True),
    ("x.y/z/v2.0", False),
    ("X.y/z", False),
    ("!x.y/z", False),
    ("_x.y/z", False),
    ("x.y!/z", False),
    ('x.y"/z', False),
    ("x.y#/z", False),
    ("x.y$/z", False),
    ("x.y%/z", False),
    ("x.y&/z", False),
    ("x.y'/z", False),
    ("x.y(/z", False),
    ("x.y)/z", False),
    ("x.y*/z", False),
    ("x.y+/z", False),
    ("x.y,/z", False),
    ("x.y-/z", True),
    ("x.y./zt", False),
    ("x.y:/z", False),
    ("x.y;/z", False),
    ("x.y</z", False),
    ("x.y=/z", False),
    ("x.y>/z", False),
    ("x.y?/z", False),
    ("x.y@/z", False),
    ("x.y[/z", False),
    ("x.y\\/z", False),
    ("x.y]/z", False),
    ("x.y^/z", False),
    ("x.y_/z", False),
    ("x.y`/z", False),
    ("x.y{/z", False),
    ("x.y}/z", False),
    ("x.y~/z", False),
    ("x.y/z!", False),
    ('x.y/z"', False),
    ("x.y/z#", False),
    ("x.y/z$", False),
    ("x.y/z%", False),
    ("x.y/z&", False),
    ("x.y/z'", False),
    ("x.y/z(", False),
    ("x.y/z)", False),
    ("x.y/z*", False),
    ("x.y/z++", False),
    ("x.y/z,", False),
    ("x.y/z-", True),
    ("x.y/z.t", True),
    ("x.y/z/t", True),
    ("x.y/z:", False),
    ("x.y/z;", False),
    ("x.y/z<", False),
    ("x.y/z=", False),
    ("x.y/z>", False),
    ("x.y/z?", False),
    ("x.y/z@", False),
    ("x.y/z[", False),
    ("x.y/z\\", False),
    ("x.y/z]", False),
    ("x.y/z^", False),
    ("x.y/z_", True),
    ("x.y/z`", False),
    ("x.y/z{", False),
    ("x.y/z}", False),
    ("x.y/z~", True),
    ("x.y/x.foo", True),
    ("x.y/aux.foo", False),
    ("x.y/prn", False),
    ("x.y/prn2", True),
    ("x.y/com", True),
    ("x.y/com1", False),
    ("x.y/com1.txt", False),
    ("x.y/calm1", True),
    ("x.y/z~0", False),
    ("x.y/z~09", False),
    ("x.y/z09", True),
    ("x.y/z09~", True),
    ("x.y/z09~09z", True),
    ("x.y/z09~09z~09", False),
    ("github.com/!123/logrus", False),
    ("github.com/user/unicode/\u0438\u0441\u043f\u044b\u0442\u0430\u043d\u0438\u0435", False),
    ("../x", False),
    ("./y", False),
    ("x:y", False),
    ("\\temp\\foo", False),
    (".gitignore", False),
    (".github/ISSUE_TEMPLATE", False),
    ("x\u263ay", False),
    # Ours, beyond module_test.go.
    ("x.y/CON", False),
    ("x.y/Lpt9.go", False),
    ("x.y/z\x00", False),
    ("x.y/z\n", False),
    ("gopkg.in/yaml.v2", True),
    ("gopkg.in/yaml", False),
    ("gopkg.in/yaml.v02", False),
    ("gopkg.in/yaml.v1-unstable", True),
    ("github.com/Azure/azure-sdk-for-go", True),
    ("github.com/go-yaml/yaml/v10", True),
]


@pytest.mark.parametrize(("path", "ok"), CHECK_PATH_TESTS)
def test_check_path(path: str, ok: bool) -> None:
    if ok:
        _module.check_path(path)
        assert _module.unescape_path(_module.escape_path(path)) == path
    else:
        with pytest.raises(InvalidPathError):
            _module.check_path(path)
        with pytest.raises(InvalidPathError):
            _module.escape_path(path)
        # An invalid path stays invalid when presented in (supposedly) escaped form.
        with pytest.raises(InvalidPathError):
            _module.unescape_path(path)


@pytest.mark.parametrize(
    ("prefix", "path_major"),
    [
        ("x.y/z", ""),
        ("x.y/z", "/v2"),
        ("x.y/z", "/v3"),
        ("x.y/v", ""),
        ("gopkg.in/yaml", ".v0"),
        ("gopkg.in/yaml", ".v1"),
        ("gopkg.in/yaml", ".v2"),
        ("gopkg.in/yaml", ".v3"),
    ],
)
def test_split_path_version(prefix: str, path_major: str) -> None:
    assert _module.split_path_version(prefix + path_major) == (prefix, path_major, True)


@pytest.mark.parametrize(("path", "_ok"), CHECK_PATH_TESTS)
def test_split_path_version_adds_up(path: str, _ok: bool) -> None:
    prefix, path_major, _ = _module.split_path_version(path)
    assert prefix + path_major == path


def test_split_path_version_refuses_malformed_majors() -> None:
    for path in ["x.y/z/v1", "x.y/z/v0", "x.y/z/v02", "x.y/z/v1.2", "gopkg.in/yaml"]:
        assert _module.split_path_version(path) == (path, "", False)


# (path, escaped form): escapeTests.
ESCAPE_TESTS = [
    (
        "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
        "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
    ),
    ("github.com/GoogleCloudPlatform/omega", "github.com/!google!cloud!platform/omega"),
    ("github.com/Azure/azure-sdk-for-go", "github.com/!azure/azure-sdk-for-go"),
    ("github.com/Sirupsen/logrus", "github.com/!sirupsen/logrus"),
]


@pytest.mark.parametrize(("path", "escaped"), ESCAPE_TESTS)
def test_escape_path(path: str, escaped: str) -> None:
    assert _module.escape_path(path) == escaped
    assert _module.unescape_path(escaped) == path


@pytest.mark.parametrize(
    "escaped",
    [
        # badUnescape
        "github.com/GoogleCloudPlatform/omega",
        "github.com/!google!cloud!platform!/omega",
        "github.com/!0google!cloud!platform/omega",
        "github.com/!_google!cloud!platform/omega",
        "github.com/!!google!cloud!platform/omega",
        "",
        # Ours
        "github.com/google!",
        "github.com/!\u00e9",
        "github.com/\u00e9",
    ],
)
def test_unescape_path_refuses(escaped: str) -> None:
    with pytest.raises(InvalidPathError):
        _module.unescape_path(escaped)


# ---------------------------------------------------------------------------------------
# module.Check, CheckPathMajor, CanonicalVersion
# ---------------------------------------------------------------------------------------

# (path, version, ok): checkTests.
CHECK_TESTS = [
    ("rsc.io/quote", "0.1.0", False),
    ("rsc io/quote", "v1.0.0", False),
    ("github.com/go-yaml/yaml", "v0.8.0", True),
    ("github.com/go-yaml/yaml", "v1.0.0", True),
    ("github.com/go-yaml/yaml", "v2.0.0", False),
    ("github.com/go-yaml/yaml", "v2.1.5", False),
    ("github.com/go-yaml/yaml", "v3.0.0", False),
    ("github.com/go-yaml/yaml/v2", "v1.0.0", False),
    ("github.com/go-yaml/yaml/v2", "v2.0.0", True),
    ("github.com/go-yaml/yaml/v2", "v2.1.5", True),
    ("github.com/go-yaml/yaml/v2", "v3.0.0", False),
    ("gopkg.in/yaml.v0", "v0.8.0", True),
    ("gopkg.in/yaml.v0", "v1.0.0", False),
    ("gopkg.in/yaml.v0", "v2.0.0", False),
    ("gopkg.in/yaml.v0", "v2.1.5", False),
    ("gopkg.in/yaml.v0", "v3.0.0", False),
    ("gopkg.in/yaml.v1", "v0.8.0", False),
    ("gopkg.in/yaml.v1", "v1.0.0", True),
    ("gopkg.in/yaml.v1", "v2.0.0", False),
    ("gopkg.in/yaml.v1", "v2.1.5", False),
    ("gopkg.in/yaml.v1", "v3.0.0", False),
    # Early vgo generated v0 pseudo-versions for gopkg.in .v1 paths; they stay accepted.
    ("gopkg.in/check.v1", "v0.0.0", False),
    ("gopkg.in/check.v1", "v0.0.0-20160102150405-abcdef123456", True),
    ("gopkg.in/yaml.v2", "v1.0.0", False),
    ("gopkg.in/yaml.v2", "v2.0.0", True),
    ("gopkg.in/yaml.v2", "v2.1.5", True),
    ("gopkg.in/yaml.v2", "v3.0.0", False),
    ("rsc.io/quote", "v17.0.0", False),
    ("rsc.io/quote", "v17.0.0+incompatible", True),
]


@pytest.mark.parametrize(("path", "version", "ok"), CHECK_TESTS)
def test_check_module_version(path: str, version: str, ok: bool) -> None:
    if ok:
        _module.check_module_version(path, version)
    else:
        with pytest.raises(InvalidRequestError):
            _module.check_module_version(path, version)


def test_check_module_version_error_kinds() -> None:
    with pytest.raises(InvalidPathError):
        _module.check_module_version("rsc io/quote", "v1.0.0")
    with pytest.raises(InvalidVersionError, match="not a semantic version"):
        _module.check_module_version("rsc.io/quote", "0.1.0")
    with pytest.raises(InvalidVersionError, match="should be v0 or v1, not v2"):
        _module.check_module_version("github.com/go-yaml/yaml", "v2.0.0")
    with pytest.raises(InvalidVersionError, match="should be v2, not v3"):
        _module.check_module_version("github.com/go-yaml/yaml/v2", "v3.0.0")


@pytest.mark.parametrize(
    ("version", "path_major", "ok"),
    [
        ("v0.0.0", "", True),
        ("v0.0.0", "/v2", False),
        ("v0.0.0", ".v0", True),
        ("v0.0.0-20190510104115-cbcb75029529", ".v1", True),
        ("v1.0.0", "/v2", False),
        ("v1.0.0", ".v1", True),
        ("v1.0.0", ".v1-unstable", True),
        ("v2.0.0+incompatible", "", True),
        ("v2.0.0", "", False),
        ("v2.0.0", "/v2", True),
        ("v2.0.0", ".v2", True),
    ],
)
def test_check_path_major(version: str, path_major: str, ok: bool) -> None:
    assert _module.match_path_major(version, path_major) == ok
    if ok:
        _module.check_path_major(version, path_major)
    else:
        with pytest.raises(InvalidVersionError):
            _module.check_path_major(version, path_major)


@pytest.mark.parametrize(
    ("version", "canonical", "is_canonical"),
    [
        ("v1.2.3", "v1.2.3", True),
        ("v1.2", "v1.2.0", False),
        ("v1", "v1.0.0", False),
        ("v1.2.3-pre", "v1.2.3-pre", True),
        ("v1.2.3+meta", "v1.2.3", False),
        ("v2.0.0+incompatible", "v2.0.0+incompatible", True),
        ("v2.0+incompatible", "", False),  # shorthands take no build suffix
        ("v2.0.0-pre+incompatible", "v2.0.0-pre+incompatible", True),
        ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.0-20191109021931-daa7c04131f5", True),
        ("master", "", False),
        ("latest", "", False),
        ("", "", False),
    ],
)
def test_canonical_version(version: str, canonical: str, is_canonical: bool) -> None:
    assert _module.canonical_version(version) == canonical
    assert _module.is_canonical_version(version) == is_canonical
    if is_canonical:
        _module.check_canonical_version(version)
    else:
        with pytest.raises(InvalidVersionError):
            _module.check_canonical_version(version)


def test_check_canonical_version_suggests_the_canonical_form() -> None:
    with pytest.raises(InvalidVersionError, match=re.escape("'v1.2.0'")):
        _module.check_canonical_version("v1.2")


# ---------------------------------------------------------------------------------------
# Versions and queries (ours: Go's EscapeVersion rules, narrowed)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "escaped"),
    [
        ("v1.2.3", "v1.2.3"),
        ("v1.2.3-RC1", "v1.2.3-!r!c1"),
        ("v2.0.0+incompatible", "v2.0.0+incompatible"),
        ("v0.0.0-20191109021931-daa7c04131f5", "v0.0.0-20191109021931-daa7c04131f5"),
        ("latest", "latest"),
        ("upgrade", "upgrade"),
        ("patch", "patch"),
        ("master", "master"),
        ("Feature_Branch~2", "!feature_!branch~2"),  # no short-name rule for file names
        ("daa7c04131f5", "daa7c04131f5"),
        ("v1.2", "v1.2"),
        ("x" * 250, "x" * 250),
        ("A" * 125, "!a" * 125),
    ],
)
def test_escape_version(version: str, escaped: str) -> None:
    _module.check_version_query(version)
    assert _module.escape_version(version) == escaped
    assert _module.unescape_version(escaped) == version


@pytest.mark.parametrize(
    "version",
    [
        "",
        ".",
        "..",
        ".hidden",
        "-v1",  # ours: reads as an option
        "v1.",
        "v1/2",
        "feature/x",
        "v1\\2",
        "v1\x00",
        "v1\n",
        "v1 2",  # ours: Go allows spaces in file names
        "v1!",
        "v1@x",  # ours
        "v1#x",  # ours
        "<v1.2.3",
        ">=v1.2",
        "v1:2",
        "\u00e9t\u00e9",  # ours: Go allows Unicode letters in file names
        "aux",
        "CON.v1",
        "x" * 251,
        "A" * 126,  # 252 bytes once escaped
    ],
)
def test_version_refused(version: str) -> None:
    with pytest.raises(InvalidVersionError):
        _module.check_version_query(version)
    with pytest.raises(InvalidVersionError):
        _module.escape_version(version)
    # Nor is it any better in escaped form.
    with pytest.raises(InvalidVersionError):
        _module.unescape_version(_go_escape(version))


@pytest.mark.parametrize("escaped", ["v1.0.0-RC1", "v1!", "!", "!1", "!!a", "v1.0.0-!R"])
def test_unescape_version_refuses(escaped: str) -> None:
    with pytest.raises(InvalidVersionError):
        _module.unescape_version(escaped)


# ---------------------------------------------------------------------------------------
# Length bounds and error messages (ours)
# ---------------------------------------------------------------------------------------


def test_path_length_bounds() -> None:
    _module.check_path("x.y/" + "z" * 255)
    with pytest.raises(InvalidPathError, match="255"):
        _module.check_path("x.y/" + "z" * 256)
    # Escaping doubles upper-case letters: 128 of them make a 256-byte directory name.
    _module.check_path("x.y/" + "Z" * 127 + "z")
    with pytest.raises(InvalidPathError, match="255"):
        _module.check_path("x.y/" + "Z" * 128)

    elements = ["z" * 200] * 6
    longest = "x.y/" + "/".join(elements)[: 1024 - 4]
    assert len(longest) == 1024
    _module.check_path(longest)
    with pytest.raises(InvalidPathError, match="1024"):
        _module.check_path(longest + "z")
    with pytest.raises(InvalidPathError):
        _module.unescape_path("x.y/" + "!z" * 2000)


def test_error_messages_quote_and_truncate_input() -> None:
    with pytest.raises(InvalidPathError) as path_error:
        _module.check_path("x.y/\x1b[31mred\n" + "z" * 5000)
    message = str(path_error.value)
    assert "\x1b" not in message
    assert "\n" not in message
    assert "\\x1b[31mred\\n" in message
    assert len(message) < 300

    with pytest.raises(InvalidVersionError) as version_error:
        _module.unescape_version("v1\r\n" * 1000)
    message = str(version_error.value)
    assert "\r" not in message
    assert "\n" not in message
    assert len(message) < 300

    with pytest.raises(InvalidPathError, match=re.escape("'X.y/z'")):
        _module.check_path("X.y/z")


def test_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="malformed module path"):
        _module.check_path("")
    with pytest.raises(ValueError, match="invalid version"):
        _module.check_version_query("")


# ---------------------------------------------------------------------------------------
# Pseudo-versions (pseudo_test.go)
# ---------------------------------------------------------------------------------------

# (tag the pseudo-version builds on, pseudo-version): pseudoTests, revision "hash".
PSEUDO_TESTS = [
    ("", "v0.0.0-20060102150405-hash"),
    ("", "v1.0.0-20060102150405-hash"),
    ("", "v2.0.0-20060102150405-hash"),
    ("v0.0.0", "v0.0.1-0.20060102150405-hash"),
    ("v1.2.3", "v1.2.4-0.20060102150405-hash"),
    ("v1.2.99999999999999999", "v1.2.100000000000000000-0.20060102150405-hash"),
    ("v1.2.3-pre", "v1.2.3-pre.0.20060102150405-hash"),
    ("v1.3.0-pre", "v1.3.0-pre.0.20060102150405-hash"),
    ("v0.0.0--", "v0.0.0--.0.20060102150405-hash"),
    ("v1.0.0+metadata", "v1.0.1-0.20060102150405-hash+metadata"),
    ("v2.0.0+incompatible", "v2.0.1-0.20060102150405-hash+incompatible"),
    ("v2.3.0-pre+incompatible", "v2.3.0-pre.0.20060102150405-hash+incompatible"),
]

PSEUDO_TIME = datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(("base", "version"), PSEUDO_TESTS)
def test_pseudo_version(base: str, version: str) -> None:
    assert _module.is_pseudo_version(version)
    assert _module.pseudo_version_time(version) == PSEUDO_TIME
    assert _module.pseudo_version_rev(version) == "hash"
    assert _module.pseudo_version_base(version) == base

    assert not _module.is_pseudo_version(base)
    with pytest.raises(InvalidVersionError):
        _module.pseudo_version_time(base)
    with pytest.raises(InvalidVersionError):
        _module.pseudo_version_rev(base)


@pytest.mark.parametrize(
    "version",
    [
        "v0.0.0",
        "v0.0.0-",  # malformed: empty prerelease
        "v0.0.0-0.20060102150405-hash",  # Z+1 == 0
        "v0.1.0-0.20060102150405-hash",  # Z+1 == 0
        "v1.0.0-0.20060102150405-hash",  # Z+1 == 0
        "v0.0.0-20060102150405-hash+incompatible",  # +incompatible without a base version
        "v0.0.0-20060102150405-hash+metadata",  # other metadata without a base version
    ],
)
def test_pseudo_version_base_refuses(version: str) -> None:
    with pytest.raises(InvalidVersionError):
        _module.pseudo_version_base(version)


@pytest.mark.parametrize(
    "version",
    [
        "---",
        "v0.0.0-20061302150405-hash",  # month 13
        "v0.0.0-20060230150405-hash",  # February 30
        "v0.0.0-20060102240405-hash",  # hour 24
        "v0.0.0-00000102150405-hash",  # year 0: Go's time has it, Python's does not
    ],
)
def test_pseudo_version_time_refuses(version: str) -> None:
    with pytest.raises(InvalidVersionError):
        _module.pseudo_version_time(version)


@pytest.mark.parametrize(
    "version",
    [
        "v0.0.0-2006010215040-hash",  # 13-digit timestamp
        "v0.0.0-20060102150405-hash\n",
        # The timestamp in ARABIC-INDIC digits, which Python's \d would match.
        "v0.0.0-" + "".join(chr(0x660 + int(digit)) for digit in "20060102150405") + "-hash",
        "v1.2.3-20060102150405-hash",  # a v1.2.3 base would need "-0."
    ],
)
def test_not_pseudo_versions(version: str) -> None:
    assert not _module.is_pseudo_version(version)


# ---------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------

# Pieces that, strung together, make paths and versions near the edges of validity.
_TOKENS = [
    "a", "z", "A", "Z", "0", "9", "x.y", "github.com", "gopkg.in/", "v", "v2", "/v2",
    ".v1", "-unstable", "/", ".", "..", "-", "_", "~", "~1", "+", "!", "!a", "!A", "!!",
    "\\", "\x00", "\n", " ", "%2e", "\u00e9", "\u212a", "\udcff", "con", "Aux", "@", ":",
]  # fmt: skip
_EDGY_TEXT = st.lists(st.sampled_from(_TOKENS), max_size=12).map("".join)
_ANY_TEXT = st.one_of(st.text(max_size=40), _EDGY_TEXT)

_MOSTLY_VALID_PATHS = st.builds(
    lambda domain, elements: "/".join([domain, *elements]),
    st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}\.[a-z]{2,6}", fullmatch=True),
    st.lists(st.from_regex(r"[A-Za-z0-9_~][A-Za-z0-9._~-]{0,12}", fullmatch=True), max_size=4),
)
_MOSTLY_VALID_VERSIONS = st.one_of(
    st.from_regex(
        r"v[0-9]{1,3}(\.[0-9]{1,3}){0,2}(-[A-Za-z0-9.]{1,10})?(\+[a-z]{1,12})?", fullmatch=True
    ),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._~+-]{0,30}", fullmatch=True),
)


# Escaped forms: mostly valid ones, the same with edgy text appended, and anything.
_ESCAPED_PATHS = st.one_of(
    _ANY_TEXT,
    _MOSTLY_VALID_PATHS.map(_go_escape),
    st.builds(operator.add, _MOSTLY_VALID_PATHS.map(_go_escape), _EDGY_TEXT),
)
_ESCAPED_VERSIONS = st.one_of(
    _ANY_TEXT,
    _MOSTLY_VALID_VERSIONS.map(_go_escape),
    st.builds(operator.add, _MOSTLY_VALID_VERSIONS.map(_go_escape), _EDGY_TEXT),
)

_PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def _is_safe_storage_name(escaped: str) -> bool:
    """Report whether *escaped* can be joined under a storage root without escaping it."""
    elements = escaped.split("/")
    root = "/srv/athens"
    joined = posixpath.normpath(posixpath.join(root, escaped))
    return (
        bool(escaped)
        and not escaped.startswith(("/", "-"))
        and "\x00" not in escaped
        and "\\" not in escaped
        and escaped.isascii()
        and all(element not in ("", ".", "..") for element in elements)
        and joined.startswith(root + "/")
    )


@_PROPERTY_SETTINGS
@given(_ESCAPED_PATHS)
def test_unescape_path_round_trips_and_is_safe(escaped: str) -> None:
    try:
        path = _module.unescape_path(escaped)
    except InvalidPathError:
        return
    assert _module.escape_path(path) == escaped
    assert _is_safe_storage_name(escaped)


@_PROPERTY_SETTINGS
@given(st.one_of(_MOSTLY_VALID_PATHS, _ANY_TEXT))
def test_escape_path_round_trips(path: str) -> None:
    try:
        _module.check_path(path)
    except InvalidPathError:
        with pytest.raises(InvalidPathError):
            _module.escape_path(path)
        return
    escaped = _module.escape_path(path)
    assert _module.unescape_path(escaped) == path
    assert not any("A" <= char <= "Z" for char in escaped)
    assert _is_safe_storage_name(escaped)


@_PROPERTY_SETTINGS
@given(_ESCAPED_VERSIONS)
def test_unescape_version_round_trips_and_is_safe(escaped: str) -> None:
    try:
        version = _module.unescape_version(escaped)
    except InvalidVersionError:
        return
    assert _module.escape_version(version) == escaped
    assert "/" not in escaped
    assert not escaped.startswith(".")
    assert _is_safe_storage_name(escaped)
    assert len((escaped + ".info").encode()) <= 255


@_PROPERTY_SETTINGS
@given(st.one_of(_MOSTLY_VALID_VERSIONS, _ANY_TEXT))
def test_escape_version_round_trips(version: str) -> None:
    try:
        _module.check_version_query(version)
    except InvalidVersionError:
        with pytest.raises(InvalidVersionError):
            _module.escape_version(version)
        return
    escaped = _module.escape_version(version)
    assert _module.unescape_version(escaped) == version
    assert not any("A" <= char <= "Z" for char in escaped)


@_PROPERTY_SETTINGS
@given(_MOSTLY_VALID_VERSIONS, _MOSTLY_VALID_VERSIONS)
def test_semver_compare_is_consistent(v: str, w: str) -> None:
    assert _semver.compare(v, w) == -_semver.compare(w, v)
    if _semver.is_valid(v):
        assert _semver.compare(v, _semver.canonical(v)) == 0
        assert _semver.canonical(_semver.canonical(v)) == _semver.canonical(v)
        assert _module.canonical_version(_module.canonical_version(v)) == (
            _module.canonical_version(v)
        )
    assert _semver.sort_versions([v, w]) == _semver.sort_versions([w, v])
