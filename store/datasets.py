"""Dataset rows. Validating the files is the API's job; this module stores the verdict."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from store.models import Dataset, DatasetStatus


def create_dataset(
    session: Session,
    *,
    owner_id: str,
    name: str,
    path: str,
    format: str,
    num_cases: int,
    num_classes: int,
    labels: Any = None,
    modality: str | None = None,
    synthetic: bool = False,
    report: dict[str, Any] | None = None,
    status: DatasetStatus | str = DatasetStatus.READY,
) -> Dataset:
    """Add a dataset; a name the owner already uses raises ``IntegrityError`` at the flush."""
    dataset = Dataset(
        owner_id=owner_id,
        name=name,
        path=path,
        format=format,
        modality=modality,
        num_cases=num_cases,
        num_classes=num_classes,
        labels=labels,
        synthetic=synthetic,
        report=report,
        status=DatasetStatus(status).value,
    )
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(session: Session, dataset_id: str, *, owner_id: str | None = None) -> Dataset | None:
    """The dataset, or None if it does not exist or belongs to someone other than ``owner_id``."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or (owner_id is not None and dataset.owner_id != owner_id):
        return None
    return dataset


def get_dataset_by_name(session: Session, owner_id: str, name: str) -> Dataset | None:
    stmt = select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name)
    return session.scalars(stmt).one_or_none()


def list_datasets(session: Session, owner_id: str) -> list[Dataset]:
    """The owner's datasets, newest first."""
    stmt = select(Dataset).where(Dataset.owner_id == owner_id).order_by(Dataset.created_at.desc(), Dataset.id)
    return list(session.scalars(stmt))
