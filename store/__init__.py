"""Persistence shared by the API and the workers.

Modules, one job each:

- ``settings``: the one settings object (``THRIFTY_*`` environment variables).
- ``models``: the SQLAlchemy tables; ``types``: ids, UTC timestamps.
- ``db``: engines and sessions; ``migrate``: Alembic upgrade/downgrade.
- ``users``, ``datasets``, ``jobs``, ``history``, ``pagination``: domain operations.
- ``artifacts``: the artefact files on disk and their rows.

Domain functions take a ``Session``, flush, and never commit: the caller owns the
transaction (``db.session_scope()`` commits on success). Importing this package has
no side effects: no engine, no folder, no environment read.
"""
