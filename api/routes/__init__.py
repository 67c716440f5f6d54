"""The routers, one module per resource; ``api.main`` includes them.

Each router carries its full path (``/v1/...``), so a matched route's ``path`` is the
whole template (the latency metric's ``route`` label).
"""

API_PREFIX = "/v1"
