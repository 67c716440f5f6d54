"""The tables: SQLAlchemy 2 typed declarative models, portable to PostgreSQL and SQLite.

Portable choices: ``sqlalchemy.JSON`` columns, ``UTCDateTime`` timestamps (aware,
UTC), string ids from ``types.new_id`` (``usr_``, ``key_``, ``ds_``, ``job_``,
``gen_``, ``art_`` + 32 hex), integer ids for the per-epoch history rows. Enumerations
are short strings guarded by CHECK constraints; the ``StrEnum`` classes below list
the allowed values. Constraint names follow ``NAMING_CONVENTION`` so that Alembic
migrations can name what they alter or drop.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from store.types import ID_LENGTH, UTCDateTime, new_id, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JobKind(StrEnum):
    SEARCH = "search"
    RETRAIN = "retrain"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class DatasetStatus(StrEnum):
    READY = "ready"
    INVALID = "invalid"


class CellType(StrEnum):
    DOWN = "dn"
    UP = "up"


class Split(StrEnum):
    TRAIN = "train"
    VAL = "val"
    ARCH = "arch"


class ArtifactKind(StrEnum):
    CHECKPOINT = "checkpoint"
    GENOTYPE = "genotype"
    METRICS = "metrics"
    ALPHAS = "alphas"
    LOG = "log"
    PLOT = "plot"
    BUNDLE = "bundle"
    ONNX = "onnx"


def _one_of(column: str, values: type[StrEnum], name: str) -> CheckConstraint:
    allowed = ", ".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=name)


def _id(prefix: str) -> Mapped[str]:
    return mapped_column(String(ID_LENGTH), primary_key=True, default=lambda: new_id(prefix))


def _fk(target: str, *, nullable: bool = False, index: bool = True, ondelete: str | None = "CASCADE") -> Mapped[Any]:
    return mapped_column(
        String(ID_LENGTH), ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index
    )


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(none_as_null=True),
        list[Any]: JSON(none_as_null=True),
    }


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = _id("usr")
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = _created()


class ApiKey(Base):
    """An API key: only its lookup prefix and a keyed hash are stored, never the key."""

    __tablename__ = "api_keys"

    id: Mapped[str] = _id("key")
    user_id: Mapped[str] = _fk("users.id")
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None]


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        _one_of("status", DatasetStatus, "status"),
    )

    id: Mapped[str] = _id("ds")
    owner_id: Mapped[str] = _fk("users.id", index=False)
    name: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(32))
    modality: Mapped[str | None] = mapped_column(String(32))
    num_cases: Mapped[int] = mapped_column(Integer, default=0)
    num_classes: Mapped[int] = mapped_column(Integer, default=0)
    labels: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    synthetic: Mapped[bool] = mapped_column(Boolean, default=False)
    report: Mapped[dict[str, Any] | None]
    status: Mapped[str] = mapped_column(String(16), default=DatasetStatus.READY.value)
    created_at: Mapped[datetime] = _created()


class Job(Base):
    """A search or retrain: the row is the source of truth, the queue message only its id."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("owner_id", "idempotency_key"),
        Index("ix_jobs_owner_id_created_at_id", "owner_id", "created_at", "id"),
        _one_of("kind", JobKind, "kind"),
        _one_of("status", JobStatus, "status"),
    )

    id: Mapped[str] = _id("job")
    owner_id: Mapped[str] = _fk("users.id", index=False)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value, index=True)
    dataset_id: Mapped[str] = _fk("datasets.id", ondelete=None)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    architecture: Mapped[dict[str, Any] | None]
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    eta_seconds: Mapped[float | None] = mapped_column(Float)
    latest_metrics: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_id: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created()
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Genotype(Base):
    __tablename__ = "genotypes"

    id: Mapped[str] = _id("gen")
    job_id: Mapped[str | None] = _fk("jobs.id", nullable=True, ondelete="SET NULL")
    owner_id: Mapped[str] = _fk("users.id")
    epoch: Mapped[int | None] = mapped_column(Integer)
    genotype: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = _created()


class AlphaSnapshot(Base):
    """Architecture weights of one cell type at the end of one search epoch."""

    __tablename__ = "alpha_snapshots"
    __table_args__ = (
        UniqueConstraint("job_id", "epoch", "cell_type"),
        _one_of("cell_type", CellType, "cell_type"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = _fk("jobs.id", index=False)
    epoch: Mapped[int] = mapped_column(Integer)
    cell_type: Mapped[str] = mapped_column(String(4))
    alphas: Mapped[list[Any]] = mapped_column(JSON)
    betas: Mapped[list[Any] | None]
    genotype: Mapped[dict[str, Any] | None]


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (
        UniqueConstraint("job_id", "epoch", "split"),
        _one_of("split", Split, "split"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = _fk("jobs.id", index=False)
    epoch: Mapped[int] = mapped_column(Integer)
    split: Mapped[str] = mapped_column(String(8))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)


class CaseScore(Base):
    """Per-case, per-class Dice and IoU of a finished job's evaluation."""

    __tablename__ = "case_scores"
    __table_args__ = (UniqueConstraint("job_id", "case_id", "class_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = _fk("jobs.id", index=False)
    case_id: Mapped[str] = mapped_column(String(200))
    class_index: Mapped[int] = mapped_column(Integer)
    class_name: Mapped[str] = mapped_column(String(200))
    dsc: Mapped[float | None] = mapped_column(Float)
    iou: Mapped[float | None] = mapped_column(Float)


class Artifact(Base):
    """A file of a job in the artefact store; ``location`` is relative to ``artifact_dir``."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("job_id", "name"),
        _one_of("kind", ArtifactKind, "kind"),
    )

    id: Mapped[str] = _id("art")
    job_id: Mapped[str] = _fk("jobs.id", index=False)
    owner_id: Mapped[str] = _fk("users.id")
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
