"""Thrifty NAS core: the search space, PC-DARTS search, retraining and evaluation.

A plain PyTorch library: it imports nothing of the service (FastAPI, Celery,
SQLAlchemy) and reports progress through callbacks, so it runs on its own.
"""
