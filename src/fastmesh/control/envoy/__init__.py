"""Envoy v3 configuration for fastmesh: a bootstrap file, or xDS resources, to native config.

Public API (stable; the xDS client builds on it):

- ``translate_bootstrap(doc, file=None, *, route_configs=None, load_assignments=None,
  secrets=None) -> Bootstrap``: ``doc`` is YAML/JSON text or a dict; ``Bootstrap.config``
  is the native config of ``static_resources`` and ``admin``, ``Bootstrap.dynamic_resources``
  the bootstrap's own, untouched; ``Bootstrap.validate()`` runs fastmesh's validation.
- ``translate_resources(listeners, clusters, route_configs, load_assignments, secrets)
  -> dict``: xDS resources (proto3-JSON dicts, snake_case) to a native config dict.
- ``is_envoy_bootstrap(doc)``: the shape test ``parse_config`` uses.
- ``ConfigError``: every error, with the Envoy field path, file and line.

One concern per module: ``engine`` (the table walker, converters), ``listeners``,
``routes``, ``clusters``, ``tls``, ``bootstrap``, ``resources``, ``validate`` (native
validation at Envoy paths), ``detect``, ``tables`` (the compatibility doc).
"""
from fastmesh.control.envoy.bootstrap import Bootstrap, config_from_bootstrap, translate_bootstrap
from fastmesh.control.envoy.detect import is_envoy_bootstrap
from fastmesh.control.envoy.resources import translate_resources
from fastmesh.control.loader import ConfigError

__all__ = ["translate_bootstrap", "translate_resources", "is_envoy_bootstrap", "Bootstrap",
           "config_from_bootstrap", "ConfigError"]
