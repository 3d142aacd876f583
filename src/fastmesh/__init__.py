"""fastmesh: a service-mesh sidecar proxy with a compiled data plane.

Embedding (see README)::

    import fastmesh
    proxy = fastmesh.Proxy.from_file("fastmesh.yaml")   # or Proxy(config_dict)
    await proxy.start()
    ...
    await proxy.stop()

Attributes are imported lazily so that importing a data-plane module
(``fastmesh._core``) does not pull in the control side.
"""
from typing import Any

__version__ = "0.1.0"
__all__ = ["Proxy", "register", "load_config", "ConfigError", "HttpFilter", "Request",
           "CONTINUE", "STOP", "PAUSE", "__version__"]

# The filter API lives in the compiled data plane (docs/filters.md).
_FROM_CORE = ("HttpFilter", "Request", "CONTINUE", "STOP", "PAUSE")


def __getattr__(name: str) -> Any:
    if name == "Proxy":
        from fastmesh.api import Proxy
        return Proxy
    if name == "register":
        from fastmesh.control.etcd_register import register
        return register
    if name in _FROM_CORE:
        from fastmesh import _core
        return getattr(_core, name)
    if name in ("load_config", "ConfigError"):
        from fastmesh.control import config
        return getattr(config, name)
    raise AttributeError(f"module 'fastmesh' has no attribute {name!r}")
