"""The REST service of Thrifty NAS (FastAPI, versioned under ``/v1``).

``api.main.create_app(settings)`` builds the application; ``uvicorn api.main:app``
serves the one built from the environment (``THRIFTY_*``). Routes are thin: they
authenticate, load the resource (404 if it is not the caller's) and hand off to
``store`` and ``api.services``; ``api.errors`` maps every error to one JSON shape.
"""
