"""`fastmesh config --schema`: a JSON Schema generated from the validator's
key tables and schema.py's dataclasses (control/jsonschema.py), checked with
the `jsonschema` package against every shipped config, and checked to refuse
what the validator refuses by key."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fastmesh.control import validation as V
from fastmesh.control.config import ConfigError, parse_config
from fastmesh.control.jsonschema import config_json_schema

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "examples").glob("*.yaml")) + [
    ROOT / "src/fastmesh/default.yaml", ROOT / "src/fastmesh/example.yaml"]


@pytest.fixture(scope="module")
def validator():
    r = subprocess.run([sys.executable, "-m", "fastmesh", "config", "--schema"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    schema = json.loads(r.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate_against_the_schema(validator, path):
    doc = yaml.safe_load(path.read_text())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []


def test_deploy_configmap_config_validates(validator):
    cm = yaml.safe_load((ROOT / "deploy/sidecar-configmap.yaml").read_text())
    assert list(validator.iter_errors(yaml.safe_load(cm["data"]["fastmesh.yaml"]))) == []


def _sections(schema: dict, path: str = ""):
    """Every object section of the schema with its key path."""
    if schema.get("type") == "object" and "properties" in schema:
        yield path, schema
        for key, sub in schema["properties"].items():
            yield from _sections(sub, f"{path}.{key}" if path else key)
    elif schema.get("type") == "array":
        yield from _sections(schema["items"], path + "[]")


def test_sections_have_the_validators_keys():
    schema = config_json_schema()
    sections = dict(_sections(schema))
    assert set(sections[""]["properties"]) == set(V._ROOT_KEYS)
    assert set(sections["listeners[]"]["properties"]) == set(V._LISTENER_COMMON + V._LISTENER_HTTP)
    assert set(sections["clusters[]"]["properties"]) == set(V._CLUSTER_KEYS)
    assert set(sections["listeners[].virtual_hosts[].routes[]"]["properties"]) == set(V._ROUTE_KEYS)
    # every section refuses unknown keys, as the validator does
    assert all(s["additionalProperties"] is False for s in sections.values())


@pytest.mark.parametrize("where, edit", [
    ("root", lambda d: d.update(listners=[])),
    ("listener", lambda d: d["listeners"][0].update(prot="tcp")),
    ("route", lambda d: d["listeners"][0]["virtual_hosts"][0]["routes"][0].update(clustr="x")),
    ("cluster", lambda d: d["clusters"][0].update(lb_policy="maglev")),
    ("endpoint", lambda d: d["clusters"][0]["endpoints"][0].update(wieght=2)),
    ("lb enum", lambda d: d["clusters"][0].update(lb="roundrobin")),
    ("bool type", lambda d: d["listeners"][0].update(xff_append="yes")),
])
def test_schema_and_validator_both_refuse(validator, where, edit):
    doc = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    assert list(validator.iter_errors(doc)) == []
    edit(doc)
    assert list(validator.iter_errors(doc)), where
    with pytest.raises(ConfigError):
        parse_config(doc)


def test_types_come_from_the_dataclasses():
    from fastmesh.control.schema import DISCOVERY_TYPES, LB_POLICIES

    props = config_json_schema()["properties"]
    listener = props["listeners"]["items"]["properties"]
    assert listener["port"]["type"] == "integer"
    assert listener["xff_append"]["type"] == "boolean"
    assert listener["trust_retry_headers"] == {"type": "boolean", "default": False}
    assert listener["idle_timeout"]["type"] == ["number", "string"]        # a duration
    assert listener["per_connection_buffer_limit"]["type"] == ["integer", "string"]   # a size
    cluster = props["clusters"]["items"]["properties"]
    assert cluster["lb"]["enum"] == list(LB_POLICIES)
    assert cluster["type"]["enum"] == list(DISCOVERY_TYPES)     # original_dst too, once added
