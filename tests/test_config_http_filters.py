"""Tests for a listener's ``http_filters``: user filters named by import path."""
from __future__ import annotations

import dataclasses
import json
import pathlib
import pickle
import sys

import pytest

try:
    import fastmesh  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))

from fastmesh.control.config import (  # noqa: E402
    ConfigError,
    HttpFilterConfig,
    ListenerConfig,
    config_to_dict,
    parse_config,
)
from fastmesh.control.schema import FrozenMap  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Line numbers matter: the filters start on line 4, one key per line.
BASE = """\
listeners:
  - name: ingress
    port: 10000
    http_filters:
{filters}
    virtual_hosts:
      - name: all
        domains: ["*"]
        routes:
          - match: {{prefix: /}}
            cluster: backend
clusters:
  - name: backend
    endpoints:
      - {{address: 127.0.0.1, port: 8081}}
"""

AUTH = """\
      - name: auth
        import: "myco.filters:HeaderAuth"
        config:
          header: x-api-key
          keys: [a, b]
          limits: {burst: 10, rate: 2.5, strict: true, note: null}"""


def config(filters: str) -> str:
    return BASE.format(filters=filters)


def parse_error(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="test.yaml")
    return info.value


def messages(err: ConfigError) -> list[str]:
    return [str(e) for e in err.errors]


# ------------------------------------------------------------------ valid


def test_valid_filters_keep_their_order_and_config() -> None:
    cfg = parse_config(config(AUTH + '\n      - {name: audit, import: "myco.audit:Log"}'))
    auth, audit = cfg.listeners[0].http_filters
    assert auth.name == "auth" and auth.import_path == "myco.filters:HeaderAuth"
    assert auth.config == {"header": "x-api-key", "keys": ("a", "b"),
                           "limits": {"burst": 10, "rate": 2.5, "strict": True, "note": None}}
    assert isinstance(auth.config, FrozenMap) and isinstance(auth.config["limits"], FrozenMap)
    assert audit == HttpFilterConfig("audit", "myco.audit:Log")
    assert audit.config == {} and isinstance(audit.config, FrozenMap)


def test_default_is_no_filters() -> None:
    base = config("      []")
    assert parse_config(base).listeners[0].http_filters == ()
    assert parse_config(base.replace("    http_filters:\n      []\n", "")).listeners[0].http_filters == ()


@pytest.mark.parametrize("path", ["m:A", "a.b.c:Name", "_x.y2:_Z", "pkg.módulo:Clase"])
def test_import_path_forms_accepted(path: str) -> None:
    cfg = parse_config(config(f'      - {{name: f, import: "{path}"}}'))
    assert cfg.listeners[0].http_filters[0].import_path == path


def test_module_is_not_imported() -> None:
    parse_config(config('      - {name: f, import: "surely_not_installed_mod:Filter"}'))
    assert "surely_not_installed_mod" not in sys.modules


def test_filters_are_immutable_hashable_and_picklable() -> None:
    cfg = parse_config(config(AUTH))
    (flt,) = cfg.listeners[0].http_filters
    with pytest.raises(dataclasses.FrozenInstanceError):
        flt.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        flt.config["header"] = "x"  # type: ignore[index]
    with pytest.raises(AttributeError):
        flt.config._data = {}  # type: ignore[misc]
    hash(cfg)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert parse_config(config(AUTH)) == cfg
    assert parse_config(config(AUTH.replace("burst: 10", "burst: 11"))) != cfg


def test_constructor_freezes_a_plain_dict() -> None:
    flt = HttpFilterConfig("f", "m:F", {"a": [1, {"b": [2]}]})
    assert isinstance(flt.config, FrozenMap)
    assert flt.config["a"] == (1, FrozenMap({"b": (2,)}))
    hash(flt)
    assert flt.config.thaw() == {"a": [1, {"b": [2]}]}


def test_field_is_last_with_a_default() -> None:
    # Positional construction stays valid: http_filters and everything added
    # after it (max_connections, first_byte_timeout, the TLS keys) have defaults.
    fields = dataclasses.fields(ListenerConfig)
    names = [f.name for f in fields]
    i = names.index("http_filters")
    assert fields[i].default == ()
    # Fields added later go after these (never between), so existing
    # positional calls keep their meaning.
    assert names[i + 1:i + 10] == ["max_connections", "first_byte_timeout",
                                   "max_stream_duration", "trust_retry_headers", "tls",
                                   "tls_mode", "forward_client_cert_details",
                                   "set_current_client_cert_details", "network_filters"]
    assert all(f.default is not dataclasses.MISSING for f in fields[i:])
    assert [f.name for f in dataclasses.fields(HttpFilterConfig)] == ["name", "import_path", "config"]


# ------------------------------------------------------------------ errors


def test_missing_name() -> None:
    err = parse_error(config('      - {import: "m:F"}'))
    assert str(err) == "test.yaml:5: listeners[0].http_filters[0].name: missing required key"


def test_missing_import() -> None:
    err = parse_error(config("      - name: f\n        config: {}"))
    assert str(err) == "test.yaml:5: listeners[0].http_filters[0].import: missing required key"


@pytest.mark.parametrize(("value", "why"), [
    ("m.F", "no ':' between the module and the attribute"),
    ("a:b:C", "more than one ':'"),
    (":F", "'' is not a valid module name"),
    ("a..b:F", "'' is not a valid module name"),
    ("1st.mod:F", "'1st' is not a valid module name"),
    ("my-pkg:F", "'my-pkg' is not a valid module name"),
    ("a.class:F", "'class' is not a valid module name"),
    ("m:", "'' is not a valid attribute name"),
    ("m:F.g", "'F.g' is not a valid attribute name"),
    ("m: F", "' F' is not a valid attribute name"),
])
def test_bad_import_syntax(value: str, why: str) -> None:
    err = parse_error(config(f"      - name: f\n        import: {json.dumps(value)}"))
    assert str(err) == (f"test.yaml:6: listeners[0].http_filters[0].import: invalid import path "
                        f"{value!r}: {why}; expected 'package.module:Name'")


@pytest.mark.parametrize(("value", "reason"), [
    ('""', "must not be empty"),
    ("5", "expected a string, got an integer (5) (quote it)"),
])
def test_import_not_a_string(value: str, reason: str) -> None:
    err = parse_error(config(f"      - name: f\n        import: {value}"))
    assert str(err) == f"test.yaml:6: listeners[0].http_filters[0].import: {reason}"


def test_duplicate_name() -> None:
    err = parse_error(config('      - {name: f, import: "m:A"}\n      - {name: g, import: "m:B"}\n'
                             '      - {name: f, import: "m:C"}'))
    assert str(err) == ("test.yaml:7: listeners[0].http_filters[2].name: duplicate http filter "
                        "name 'f' (first defined at index 0)")


def test_same_name_on_two_listeners_is_fine() -> None:
    text = config('      - {name: f, import: "m:A"}') + """\
  - name: egress
    port: 10001
    http_filters: [{name: f, import: "m:A"}]
    virtual_hosts:
      - {name: all, domains: ["*"], routes: [{match: {prefix: /}, cluster: backend}]}
"""
    text = text.replace("clusters:\n  - name: backend\n    endpoints:\n      - {address: 127.0.0.1, "
                        "port: 8081}\n", "") + ("clusters:\n  - name: backend\n    endpoints:\n"
                                                 "      - {address: 127.0.0.1, port: 8081}\n")
    cfg = parse_config(text)
    assert [lst.http_filters[0].name for lst in cfg.listeners] == ["f", "f"]


def test_on_a_tcp_listener() -> None:
    text = """\
listeners:
  - name: t
    port: 1
    protocol: tcp
    cluster: backend
    http_filters: [{name: f, import: "m:F"}]
clusters:
  - name: backend
    endpoints:
      - {address: 127.0.0.1, port: 8081}
"""
    err = parse_error(text)
    assert str(err) == ("test.yaml:6: listeners[0].http_filters: 'http_filters' is only allowed "
                        "on http listeners (this one is tcp)")


@pytest.mark.parametrize(("value", "kind"), [("[1, 2]", "a list"), ("x", "a string ('x')"),
                                             ("null", "null"), ("3", "an integer (3)")])
def test_config_not_a_mapping(value: str, kind: str) -> None:
    err = parse_error(config(f'      - name: f\n        import: "m:F"\n        config: {value}'))
    assert str(err) == (f"test.yaml:7: listeners[0].http_filters[0].config: expected the "
                        f"filter's config (a mapping), got {kind}")


def test_config_values_must_be_plain_data() -> None:
    err = parse_error(config('      - name: f\n        import: "m:F"\n        config:\n'
                             "          since: 2024-01-02\n          ok: [1]\n"
                             "          deep: {bits: !!binary aGk=, inf: .inf}"))
    assert messages(err) == [
        "test.yaml:8: listeners[0].http_filters[0].config.since: expected a string, number, "
        "boolean, null, list or mapping, got a date (quote it)",
        "test.yaml:10: listeners[0].http_filters[0].config.deep.bits: expected a string, number, "
        "boolean, null, list or mapping, got a bytes",
        "test.yaml:10: listeners[0].http_filters[0].config.deep.inf: inf is not allowed; "
        "numbers must be finite",
    ]


def test_dict_input_with_non_string_keys() -> None:
    doc = parse_config(config(AUTH))
    raw = config_to_dict(doc)
    raw["listeners"][0]["http_filters"][0]["config"] = {1: "x", "s": {2, 3}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="d")
    assert messages(info.value) == [
        "d: listeners[0].http_filters[0].config: keys must be strings, got an integer (1)",
        "d: listeners[0].http_filters[0].config.s: expected a string, number, boolean, null, "
        "list or mapping, got a set",
    ]


def test_unknown_filter_key() -> None:
    err = parse_error(config('      - {name: f, import: "m:F", conf: {}}'))
    assert str(err) == ("test.yaml:5: listeners[0].http_filters[0].conf: unknown key 'conf'; "
                        "expected one of: name, import, config, typed_config; did you mean 'config'?")


def test_filters_not_a_list() -> None:
    err = parse_error(config('      {name: f, import: "m:F"}'))
    assert str(err) == ("test.yaml:5: listeners[0].http_filters: expected a list of http "
                        "filters, got a mapping")


# ------------------------------------------------------------------ dump


def test_dump_round_trips() -> None:
    cfg = parse_config(config(AUTH + '\n      - {name: audit, import: "myco.audit:Log"}'))
    dumped = config_to_dict(cfg)
    assert dumped["listeners"][0]["http_filters"] == [
        {"name": "auth", "import": "myco.filters:HeaderAuth",
         "config": {"header": "x-api-key", "keys": ["a", "b"],
                    "limits": {"burst": 10, "rate": 2.5, "strict": True, "note": None}}},
        {"name": "audit", "import": "myco.audit:Log", "config": {}},
    ]
    text = json.dumps(dumped)
    assert parse_config(json.loads(text)) == cfg
    assert parse_config(text) == cfg   # JSON is YAML
    assert config_to_dict(parse_config(text)) == dumped


def test_dump_writes_the_empty_default_on_http_only() -> None:
    text = config("      []")
    assert config_to_dict(parse_config(text))["listeners"][0]["http_filters"] == []
    tcp = parse_config((ROOT / "examples" / "tcp-proxy.yaml").read_text())
    assert all("http_filters" not in lst for lst in config_to_dict(tcp)["listeners"])


def test_docs_describe_the_filter_keys() -> None:
    from fastmesh.control.validation import _HTTP_FILTER_KEYS
    doc = (ROOT / "docs" / "config.md").read_text()
    section = doc.split("### http_filters", 1)[1].split("### ", 1)[0]
    assert all(f"`{key}`" in section for key in _HTTP_FILTER_KEYS)
