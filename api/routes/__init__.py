"""The routers, one module per resource; ``api.main`` includes them."""
