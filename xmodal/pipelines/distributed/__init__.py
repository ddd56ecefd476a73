"""Distributed embedding and index building on Ray (the optional ``xmodal[ray]`` extra).

Importing this package does not import Ray; ``index_with_ray`` connects when it runs.
"""

from xmodal.pipelines.distributed.run import RayIndexConfig, RayRunStats, index_with_ray

__all__ = ["RayIndexConfig", "RayRunStats", "index_with_ray"]
