# core_istio.pxd: declarations of core_istio.pxi (see _core.pxd)
# (the state lives in Worker.istio / istio_local and ClusterState.istio)
