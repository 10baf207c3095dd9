"""The layered config: every source, precedence key by key, and every kind of bad input."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalekit import loader, provenance
from scalekit.cache.config import CacheConfig
from scalekit.config import (
    NOT_SETTINGS_ENV,
    TOOLING_ENV,
    Config,
    MetricsConfig,
    env_name,
    iter_settings,
    load_config,
    load_config_origins,
    load_config_reporting,
)
from scalekit.errors import ConfigError, UnknownKeyError
from scalekit.pipeline import LAYER_ORDER
from tests.servers import REPO_ROOT


def load(tmp_path: Path, kwargs: dict[str, Any] | None = None, env: dict[str, str] | None = None,
         files: dict[str, str] | None = None) -> Config:
    for name, text in (files or {}).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return load_config(kwargs or {}, environ=env or {}, cwd=tmp_path)


# --------------------------------------------------------------------------- sources

SOURCES = [
    pytest.param({}, {}, {}, {}, id="defaults"),
    pytest.param({"metrics": {"path": "/m"}}, {}, {}, {"metrics.path": "/m"}, id="kwargs dict"),
    pytest.param({"metrics": MetricsConfig(path="/m", token="t" * 16)}, {}, {},
                 {"metrics.path": "/m", "metrics.token": "t" * 16}, id="kwargs section object"),
    pytest.param({"metrics": False}, {}, {}, {"metrics.enabled": False}, id="kwargs metrics=False"),
    pytest.param({"cache": {"memory": {"enabled": False}}}, {}, {},
                 {"cache.memory.enabled": False, "cache.enabled": True}, id="kwargs nested section"),
    pytest.param({"allowed_hosts": ["a.example", ".b.example"]}, {}, {},
                 {"allowed_hosts": ("a.example", ".b.example")}, id="kwargs list becomes tuple"),
    pytest.param({}, {"SCALEKIT_METRICS_PATH": "/m"}, {}, {"metrics.path": "/m"}, id="env key"),
    pytest.param({}, {"SCALEKIT_CACHE_MEMORY_ENABLED": "false"}, {},
                 {"cache.memory.enabled": False}, id="env nested key"),
    pytest.param({}, {"SCALEKIT_METRICS": "off"}, {}, {"metrics.enabled": False}, id="env section switch"),
    pytest.param({}, {"SCALEKIT_METRICS_ALLOW_FROM": "10.0.0.0/8, ::1"}, {},
                 {"metrics.allow_from": ("10.0.0.0/8", "::1")}, id="env comma list"),
    pytest.param({}, {"SCALEKIT_METRICS_BUCKETS_SECONDS": "[0.1, 1, 10]"}, {},
                 {"metrics.buckets_seconds": (0.1, 1.0, 10.0)}, id="env JSON list of floats"),
    pytest.param({}, {"SCALEKIT_REDIS_URL": "redis://127.0.0.1:6379/0", "SCALEKIT_REDIS_CLUSTER": "yes"},
                 {}, {"redis.url": "redis://127.0.0.1:6379/0", "redis.cluster": True}, id="env two keys"),
    pytest.param({}, {"SCALEKIT_METRICS_TOKEN": "none"}, {}, {"metrics.token": None}, id="env none"),
    pytest.param({}, {"SCALEKIT_REDIS_SOCKET_TIMEOUT_SECONDS": "0.25"}, {},
                 {"redis.socket_timeout_seconds": 0.25}, id="env float, underscores in key"),
    pytest.param({}, {}, {"scalekit.toml": '[metrics]\npath = "/m"\nexclude_paths = ["/health"]\n'},
                 {"metrics.path": "/m", "metrics.exclude_paths": ("/health",)}, id="scalekit.toml"),
    pytest.param({}, {}, {"pyproject.toml": '[project]\nname = "x"\n[tool.scalekit.metrics]\npath = "/m"\n'},
                 {"metrics.path": "/m"}, id="pyproject [tool.scalekit]"),
    pytest.param({}, {}, {"pyproject.toml": '[project]\nname = "x"\n'}, {}, id="pyproject without scalekit"),
    pytest.param({}, {}, {"scalekit.toml": '[metrics]\npath = "/a"\n',
                          "pyproject.toml": '[tool.scalekit.metrics]\npath = "/b"\n'},
                 {"metrics.path": "/a"}, id="scalekit.toml before pyproject"),
    pytest.param({}, {"SCALEKIT_CONFIG": "conf/prod.toml"}, {"conf/prod.toml": "state_dir = '/srv/sk'\n",
                                                            "scalekit.toml": "state_dir = 'ignored'\n"},
                 {"state_dir": "/srv/sk"}, id="SCALEKIT_CONFIG relative to cwd"),
    pytest.param({"config_file": "other.toml"}, {}, {"other.toml": "[cache]\nenabled = false\n"},
                 {"cache.enabled": False}, id="config_file argument"),
    pytest.param({}, {"SCALEKIT_CONFIG": "pyproject.toml"},
                 {"pyproject.toml": "[tool.scalekit]\nstate_dir = '/x'\n"}, {"state_dir": "/x"},
                 id="SCALEKIT_CONFIG naming a pyproject"),
    pytest.param({}, {}, {"scalekit.toml": "metrics = false\n"}, {"metrics.enabled": False},
                 id="toml section switch"),
]


@pytest.mark.parametrize(("kwargs", "env", "files", "expected"), SOURCES)
def test_each_source_sets_its_keys(tmp_path: Path, kwargs: dict[str, Any], env: dict[str, str],
                                   files: dict[str, str], expected: dict[str, Any]) -> None:
    settings = dict(iter_settings(load(tmp_path, kwargs, env, files)))
    defaults = dict(iter_settings(Config()))
    for key, value in settings.items():
        assert value == expected.get(key, defaults[key]), key


def test_precedence_is_key_by_key(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        kwargs={"metrics": {"token": "k" * 16}},
        env={"SCALEKIT_METRICS_PATH": "/from-env", "SCALEKIT_METRICS_TOKEN": "e" * 16},
        files={"scalekit.toml": '[metrics]\npath = "/from-file"\nexclude_paths = ["/health"]\n'},
    )
    assert config.metrics.path == "/from-env"  # env over file
    assert config.metrics.token == "k" * 16  # arguments over env
    assert config.metrics.exclude_paths == ("/health",)  # file over defaults


def test_section_object_is_taken_whole(tmp_path: Path) -> None:
    # A section object's defaults override lower layers too: it is the whole section.
    config = load(tmp_path, kwargs={"metrics": MetricsConfig(path="/m")},
                  env={"SCALEKIT_METRICS_EXCLUDE_PATHS": "/health"})
    assert config.metrics == MetricsConfig(path="/m")


def test_whole_config_object_with_overrides(tmp_path: Path) -> None:
    base = Config(state_dir="/srv/state", metrics=MetricsConfig(path="/m"))
    assert load_config({"config": base}, environ={"SCALEKIT_STATE_DIR": "/ignored"}) is base
    derived = load_config({"config": base, "metrics": False})
    assert derived == dataclasses.replace(base, metrics=MetricsConfig(enabled=False, path="/m"))


@pytest.mark.parametrize("section", LAYER_ORDER)
@pytest.mark.parametrize("how", ["kwargs", "env", "toml"])
def test_every_layer_can_be_switched_off(tmp_path: Path, section: str, how: str) -> None:
    kwargs = {section: False} if how == "kwargs" else {}
    env = {f"SCALEKIT_{section.upper()}_ENABLED": "false"} if how == "env" else {}
    files = {"scalekit.toml": f"[{section}]\nenabled = false\n"} if how == "toml" else {}
    assert getattr(load(tmp_path, kwargs, env, files), section).enabled is False


def _env_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, dict)):
        return json.dumps(value)
    return str(value)


def test_every_setting_round_trips_through_its_environment_variable() -> None:
    # Also catches two keys whose variable names would collide (cache.memory_x vs cache.memory.x).
    defaults = Config()
    names = [env_name(key) for key, _ in iter_settings(defaults)]
    assert len(names) == len(set(names))
    for key, value in iter_settings(defaults):
        loaded = load_config({}, environ={env_name(key): _env_text(value)}, cwd="/nonexistent")
        assert dict(iter_settings(loaded))[key] == value, key


# --------------------------------------------------------------------------- bad input

BAD = [
    pytest.param({"metrics": {"pth": "/m"}}, {}, {}, UnknownKeyError, "metrics.pth", "metrics.path",
                 "arguments", id="unknown key in arguments"),
    pytest.param({"metric": {}}, {}, {}, UnknownKeyError, "metric", "metrics", "arguments",
                 id="unknown section"),
    pytest.param({}, {}, {"scalekit.toml": "[cache.memory]\nenabeld = true\n"}, UnknownKeyError,
                 "cache.memory.enabeld", "cache.memory.enabled", "scalekit.toml", id="unknown key in toml"),
    pytest.param({}, {}, {"pyproject.toml": "[tool.scalekit]\nstatedir = 'x'\n"}, UnknownKeyError,
                 "statedir", "state_dir", "[tool.scalekit]", id="unknown key in pyproject"),
    pytest.param({}, {"SCALEKIT_METRICS_PTH": "/m"}, {}, UnknownKeyError, "SCALEKIT_METRICS_PTH",
                 "SCALEKIT_METRICS_PATH", "environment", id="unknown environment variable"),
    pytest.param({}, {"SCALEKIT_CACHE_MEMORY_ENABLD": "1"}, {}, UnknownKeyError,
                 "SCALEKIT_CACHE_MEMORY_ENABLD", "SCALEKIT_CACHE_MEMORY_ENABLED", "environment",
                 id="unknown nested environment variable"),
    pytest.param({}, {"SCALEKIT_METRICS_ENABLED": "maybe"}, {}, ConfigError, "metrics.enabled",
                 None, "SCALEKIT_METRICS_ENABLED", id="env bool not a bool"),
    pytest.param({}, {"SCALEKIT_REDIS_SOCKET_TIMEOUT_SECONDS": "fast"}, {}, ConfigError,
                 "redis.socket_timeout_seconds", None, "SCALEKIT_REDIS_SOCKET_TIMEOUT_SECONDS",
                 id="env number not a number"),
    pytest.param({}, {}, {"scalekit.toml": "[redis]\nsocket_timeout_seconds = 'fast'\n"}, ConfigError,
                 "redis.socket_timeout_seconds", None, "scalekit.toml", id="toml string for a number"),
    pytest.param({"metrics": {"path": 5}}, {}, {}, ConfigError, "metrics.path", None, "arguments",
                 id="number for a string"),
    pytest.param({"metrics": {"enabled": 1}}, {}, {}, ConfigError, "metrics.enabled", None, "arguments",
                 id="integer for a bool"),
    pytest.param({"allowed_hosts": 5}, {}, {}, ConfigError, "allowed_hosts", None, "arguments",
                 id="number for a list"),
    pytest.param({"metrics": {"exclude_paths": [1]}}, {}, {}, ConfigError, "metrics.exclude_paths[0]",
                 None, "arguments", id="bad list item"),
    pytest.param({"cache": 3}, {}, {}, ConfigError, "cache", None, "arguments", id="scalar for a section"),
    pytest.param({}, {}, {"scalekit.toml": 'metrics = "yes please"\n'}, ConfigError, "metrics", None,
                 "scalekit.toml", id="text for a section in toml"),
    pytest.param({}, {}, {"scalekit.toml": '[metrics]\npath = "metrics"\n'}, ConfigError, "metrics.path",
                 None, "scalekit.toml", id="bad value from __post_init__ names the file"),
    pytest.param({}, {"SCALEKIT_METRICS_ALLOW_FROM": "10.0.0.0/8,nowhere"}, {}, ConfigError,
                 "metrics.allow_from", None, "SCALEKIT_METRICS_ALLOW_FROM", id="bad network from env"),
    pytest.param({}, {"SCALEKIT_METRICS_BUCKETS_SECONDS": "[1, 0.1]"}, {}, ConfigError,
                 "metrics.buckets_seconds", None, "SCALEKIT_METRICS_BUCKETS_SECONDS", id="unsorted buckets"),
    pytest.param({}, {"SCALEKIT_METRICS_BUCKETS_SECONDS": "[1, 2"}, {}, ConfigError,
                 "metrics.buckets_seconds", None, "SCALEKIT_METRICS_BUCKETS_SECONDS", id="broken JSON in env"),
    pytest.param({"redis": {"url": "http://x"}}, {}, {}, ConfigError, "redis.url", None, "arguments",
                 id="bad redis url"),
    pytest.param({"allowed_hosts": []}, {}, {}, ConfigError, "allowed_hosts", None, "arguments",
                 id="empty host list"),
    pytest.param({"config": {"metrics": False}}, {}, {}, ConfigError, "config", None, "arguments",
                 id="config= not a Config"),
]


@pytest.mark.parametrize(("kwargs", "env", "files", "error", "key", "suggestion", "source"), BAD)
def test_bad_input_fails_naming_key_value_expected_and_suggestion(
        tmp_path: Path, kwargs: dict[str, Any], env: dict[str, str], files: dict[str, str],
        error: type[ConfigError], key: str, suggestion: str | None, source: str) -> None:
    with pytest.raises(error) as caught:
        load(tmp_path, kwargs, env, files)
    exc = caught.value
    message = str(exc)
    assert exc.key == key
    assert key in message
    assert source in exc.source and source in message
    assert exc.suggestion == suggestion
    if suggestion:
        assert f"Did you mean '{suggestion}'?" in message
    if not isinstance(exc, UnknownKeyError):
        assert exc.expected and f"expected {exc.expected}" in message
        assert repr(exc.value)[:40] in message or exc.value == "<hidden>"
    else:
        assert "unknown" in message


def test_unknown_key_lists_the_accepted_keys(tmp_path: Path) -> None:
    with pytest.raises(UnknownKeyError) as caught:
        load(tmp_path, {"metrics": {"pth": "/m"}})
    for name in ("path", "token", "allow_from", "exclude_paths"):
        assert name in caught.value.expected


def test_token_is_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, env={"SCALEKIT_METRICS_TOKEN": "sekrit"})
    assert "sekrit" not in str(caught.value)
    assert "SCALEKIT_METRICS_TOKEN" in str(caught.value)


@pytest.mark.parametrize(("files", "env", "fragment"), [
    pytest.param({"scalekit.toml": "[metrics\npath = 1"}, {}, "is not valid TOML", id="broken toml"),
    pytest.param({"pyproject.toml": "[tool]\nscalekit = 3\n"}, {}, "tool.scalekit", id="tool.scalekit not a table"),
    pytest.param({}, {"SCALEKIT_CONFIG": "missing.toml"}, "does not exist", id="SCALEKIT_CONFIG missing file"),
    pytest.param({"dir.toml/x": ""}, {"SCALEKIT_CONFIG": "dir.toml"}, "does not exist", id="SCALEKIT_CONFIG a folder"),
])
def test_file_problems_fail_at_start_up(tmp_path: Path, files: dict[str, str], env: dict[str, str],
                                        fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as caught:
        load(tmp_path, env=env, files=files)
    assert str(tmp_path) in str(caught.value) or "tool.scalekit" in str(caught.value)


# --------------------------------------------------------------------------- the generic loader


@dataclass(frozen=True)
class Database:
    url: str = "sqlite:///x.db"
    pool_size: int = 5
    mode: Literal["read", "write"] = "write"


@dataclass(frozen=True)
class Root:
    name: str = "x"
    databases: dict[str, Database] = field(default_factory=dict)
    ratio: int | float = 1
    limits: dict[str, int] = field(default_factory=dict)
    maybe_list: tuple[str, ...] | None = None


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({"SK_DATABASES_DEFAULT_URL": "postgresql://h/db"},
                 {"default": Database(url="postgresql://h/db")}, id="dict entry key"),
    pytest.param({"SK_DATABASES_READ_REPLICA_POOL_SIZE": "9"},
                 {"read_replica": Database(pool_size=9)}, id="entry name and key with underscores"),
    pytest.param({"SK_DATABASES_A_URL": "u", "SK_DATABASES_A_MODE": "read", "SK_DATABASES_B_POOL_SIZE": "2"},
                 {"a": Database(url="u", mode="read"), "b": Database(pool_size=2)}, id="two entries"),
    pytest.param({"SK_DATABASES": '{"main": {"pool_size": 3}}'}, {"main": Database(pool_size=3)},
                 id="whole dict as JSON"),
])
def test_dict_of_sections_from_environment(env: dict[str, str], expected: dict[str, Database]) -> None:
    built = loader.build(Root, loader.read_environ(Root, env, "SK_"))
    assert built.databases == expected


@pytest.mark.parametrize(("values", "expected"), [
    pytest.param({"ratio": "2"}, {"ratio": 2}, id="int | float picks int"),
    pytest.param({"ratio": "2.5"}, {"ratio": 2.5}, id="int | float picks float"),
    pytest.param({"limits": {"a": "1"}}, {"limits": {"a": 1}}, id="dict of int"),
    pytest.param({"maybe_list": "a,b"}, {"maybe_list": ("a", "b")}, id="optional tuple"),
    pytest.param({"maybe_list": ""}, {"maybe_list": None}, id="optional tuple unset"),
    pytest.param({"databases": {"x": Database(pool_size=2)}}, {"databases": {"x": Database(pool_size=2)}},
                 id="dict of section objects"),
])
def test_generic_conversions(values: dict[str, Any], expected: dict[str, Any]) -> None:
    built = loader.build(Root, [(values, "test")])
    for key, value in expected.items():
        assert getattr(built, key) == value


@pytest.mark.parametrize(("values", "key", "fragment"), [
    pytest.param({"databases": {"a": {"mode": "raed"}}}, "databases.a.mode", "Did you mean 'read'?",
                 id="literal suggests nearest value"),
    pytest.param({"databases": {"a": {"pool_sise": 1}}}, "databases.a.pool_sise",
                 "Did you mean 'databases.a.pool_size'?", id="unknown key inside a dict entry"),
    pytest.param({"ratio": "lots"}, "ratio", "expected an integer or a number", id="union lists options"),
    pytest.param({"limits": [1]}, "limits", "expected a table", id="list for a dict"),
    pytest.param({"databases": {"a": 3}}, "databases.a", "expected a table of settings", id="scalar for entry"),
])
def test_generic_errors(values: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        loader.build(Root, [(values, "test")])
    assert caught.value.key == key
    assert fragment in str(caught.value)


def test_named_sections_from_environment_and_toml(tmp_path: Path) -> None:
    """dict-of-section keys (pool.databases.NAME.KEY) from every source, merged key by key."""
    config = load(
        tmp_path,
        kwargs={"pool": {"databases": {"default": {"max_overflow": 3}}}},
        env={"SCALEKIT_POOL_DATABASES_DEFAULT_POOL_SIZE": "9",
             "SCALEKIT_POOL_DATABASES_READ_REPLICA_URL": "postgresql://replica/db"},
        files={"scalekit.toml": "[pool.databases.default]\nurl = 'postgresql://primary/db'\n"},
    )
    default = config.pool.databases["default"]
    assert (default.url, default.pool_size, default.max_overflow) == ("postgresql://primary/db", 9, 3)
    assert config.pool.databases["read_replica"].url == "postgresql://replica/db"
    with pytest.raises(UnknownKeyError) as caught:
        load(tmp_path, env={"SCALEKIT_POOL_DATABASES_DEFAULT_POOL_SIZ": "9"})
    assert caught.value.key == "SCALEKIT_POOL_DATABASES_DEFAULT_POOL_SIZ"


# --------------------------------------------------------------------------- sources that disagree


def test_a_key_set_by_several_sources_reports_the_one_used(tmp_path: Path) -> None:
    (tmp_path / "scalekit.toml").write_text('[cache]\nenabled = true\nstatus_name = "same"\n'
                                            '[metrics]\npath = "/from-file"\n')
    config, overridden = load_config_reporting(
        {"cache": {"enabled": False}}, source="settings.SCALEKIT", cwd=tmp_path,
        environ={"SCALEKIT_CACHE_ENABLED": "yes", "SCALEKIT_CACHE_STATUS_NAME": "same",
                 "SCALEKIT_METRICS_PATH": "/from-env"})
    assert config.cache.enabled is False and config.metrics.path == "/from-env"
    by_key = {entry.key: entry for entry in overridden}
    assert set(by_key) == {"cache.enabled", "metrics.path"}  # status_name: all sources agree
    assert by_key["cache.enabled"].used == ("settings.SCALEKIT", False)
    assert by_key["cache.enabled"].ignored == ((str(tmp_path / "scalekit.toml"), True),
                                               ("environment variable SCALEKIT_CACHE_ENABLED", True))
    message = by_key["metrics.path"].message()
    assert "metrics.path" in message and "SCALEKIT_METRICS_PATH" in message and "'/from-file'" in message


def test_a_disagreement_never_shows_a_secret(tmp_path: Path) -> None:
    _, overridden = load_config_reporting(
        {"metrics": {"token": "k" * 20}, "redis": {"url": "redis://u:hunter2@h:1/0"}}, cwd=tmp_path,
        environ={"SCALEKIT_METRICS_TOKEN": "e" * 20, "SCALEKIT_REDIS_URL": "redis://u:swordfish@h:1/0"})
    text = " ".join(entry.message() for entry in overridden)
    assert "metrics.token" in text and "redis.url" in text
    for secret in ("k" * 20, "e" * 20, "hunter2", "swordfish"):
        assert secret not in text


_PATHS = st.sampled_from(["/a", "/b", "/c"])
_NAMES = st.sampled_from(["one", "two"])


@settings(max_examples=60, deadline=None)
@given(file_path=st.none() | _PATHS, env_path=st.none() | _PATHS, kwarg_path=st.none() | _PATHS,
       env_name=st.none() | _NAMES, kwarg_name=st.none() | _NAMES,
       env_on=st.none() | st.sampled_from(["true", "false", "1", "off"]), kwarg_on=st.none() | st.booleans())
def test_a_reported_disagreement_names_the_value_in_use(
        file_path: str | None, env_path: str | None, kwarg_path: str | None, env_name: str | None,
        kwarg_name: str | None, env_on: str | None, kwarg_on: bool | None) -> None:
    layers: list[loader.Layer] = []
    if file_path is not None:
        layers.append(({"metrics": {"path": file_path}}, "file"))
    environ = {name: value for name, value in (("SCALEKIT_METRICS_PATH", env_path),
                                                ("SCALEKIT_CACHE_STATUS_NAME", env_name),
                                                ("SCALEKIT_CACHE_ENABLED", env_on)) if value is not None}
    layers.extend(loader.read_environ(Config, environ, "SCALEKIT_"))
    kwargs: dict[str, Any] = {}
    if kwarg_path is not None:
        kwargs["metrics"] = {"path": kwarg_path}
    if kwarg_name is not None or kwarg_on is not None:
        kwargs["cache"] = {k: v for k, v in (("status_name", kwarg_name), ("enabled", kwarg_on)) if v is not None}
    if kwargs:
        layers.append((kwargs, "arguments"))
    config = loader.build(Config, layers)
    reported = {entry.key: entry for entry in provenance.overridden(Config, layers)}
    values = dict(iter_settings(config))
    for key, entry in reported.items():
        assert entry.used[1] == values[key]  # the value said to be used is the one in use
        assert entry.ignored and all(value != values[key] for _, value in entry.ignored)
    sets = {"metrics.path": [file_path, env_path, kwarg_path], "cache.status_name": [env_name, kwarg_name],
            "cache.enabled": [None if env_on is None else env_on in ("true", "1"), kwarg_on]}
    for key, given_values in sets.items():
        distinct = {value for value in given_values if value is not None}
        assert (key in reported) == (len(distinct) > 1)  # reported exactly when sources disagree


def test_a_framework_layer_may_hold_a_whole_config_beside_its_keys() -> None:
    # settings.SCALEKIT = {"config": Config(...), ...} (the Django shop does this): the Config is
    # the base, the framework's other keys and then the arguments go over it.
    base = Config(state_dir="/tmp/from-config", cache=CacheConfig(status_name="from-config"))
    config, _ = load_config_origins({"metrics": False}, environ={}, cwd="/nonexistent",
                                    framework=("settings.SCALEKIT", {"config": base, "state_dir": "/tmp/framework"}))
    assert (config.cache.status_name, config.state_dir, config.metrics.enabled) == (
        "from-config", "/tmp/framework", False)


# --------------------------------------------------------------------------- variables of our own tools

# Where the repository reads a SCALEKIT_* variable from the environment: Python's os.environ and
# os.getenv, and ${NAME} / $NAME / ARG NAME in shell scripts, the Makefile, compose and Dockerfiles.
_PYTHON_READ = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](SCALEKIT_[A-Z0-9_]+)["']""")
_SHELL_READ = re.compile(r"""\$\{?(SCALEKIT_[A-Z0-9_]+)|^ARG (SCALEKIT_[A-Z0-9_]+)""", re.MULTILINE)


def _variables_the_repository_reads() -> dict[str, str]:
    files = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    found: dict[str, str] = {}
    for name in files:
        path = REPO_ROOT / name
        if path.suffix == ".py":
            pattern = _PYTHON_READ
        elif path.suffix in (".sh", ".yml", ".yaml") or path.name in ("Makefile", "Dockerfile") \
                or (path.parent.name in ("scripts", ".ci") and path.suffix == ""):
            pattern = _SHELL_READ
        else:
            continue
        for match in pattern.finditer(path.read_text(errors="replace")):
            found.setdefault(next(group for group in match.groups() if group), name)
    return found


def test_every_scalekit_variable_the_repository_reads_is_a_setting_or_reserved(tmp_path: Path) -> None:
    """A script, benchmark or deploy file that reads a SCALEKIT_* name that is no setting would
    make every app started from that shell fail with "unknown environment variable" (the
    benchmarks' SCALEKIT_BENCH_REDIS_URL did): such a name goes in TOOLING_ENV."""
    read = _variables_the_repository_reads()
    assert "SCALEKIT_BENCH_REDIS_URL" in read and "SCALEKIT_TEST_WORKERS" in read  # the scan sees both kinds
    unknown = {name: where for name, where in read.items()
               if name not in NOT_SETTINGS_ENV and _unknown_to_the_loader(name, tmp_path)}
    assert unknown == {}


def _unknown_to_the_loader(name: str, folder: Path) -> bool:
    try:
        load_config(environ={name: "1"}, cwd=folder)
    except UnknownKeyError:
        return True
    except ConfigError:  # a setting, given a value it does not take
        return False
    return False


def test_the_tools_variables_never_stop_an_app_and_a_near_miss_still_does() -> None:
    config = load_config(environ={name: "anything" for name in TOOLING_ENV})
    assert config == load_config(environ={})
    with pytest.raises(UnknownKeyError, match="SCALEKIT_TEST_WORKER"):
        load_config(environ={"SCALEKIT_TEST_WORKER": "4"})
