"""Request and response bodies (pydantic), as they appear in the OpenAPI schema."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.json_schema import SkipJsonSchema

from api.deps import ID_PATTERN
from api.services.configs import NO_NUL, RetrainConfigIn, SearchConfigIn, schema_rule
from nas_core.data.formats import FORMATS as DATASET_FORMATS
from store.models import ArtifactKind, CellType, DatasetStatus, JobKind, JobStatus, Split

# A name: 1 to 200 characters, no control characters, at least one visible one (the class below lists
# what str.strip() removes, spelled out: `\s` differs between the schema's regex dialect and Python's).
# Surrounding blanks are stripped after the checks, so the schema's lengths are the server's.
_VISIBLE = r"[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
NAME_PATTERN = rf"^[^\x00-\x1f\x7f]*{_VISIBLE}[^\x00-\x1f\x7f]*$"
NAME_RULE: dict[str, Any] = {"minLength": 1, "maxLength": 200, "pattern": NAME_PATTERN}
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN), AfterValidator(str.strip)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=ID_PATTERN)]  # as sent: no blanks
FORMATS = sorted(DATASET_FORMATS)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


# --- errors -----------------------------------------------------------------------------------


class JobLogOut(BaseModel):
    job_id: str
    status: str
    lines: list[str]
    next_since: int = Field(description="the log's line count: pass it as since= to get only newer lines")


class MeOut(BaseModel):
    id: str
    name: str
    datasets: int
    jobs: int
    storage_bytes: int = Field(description="bytes of your stored artefacts")


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found, validation_error")
    message: str = Field(description="what went wrong and what to do about it")
    details: Any = Field(None, description="structured context, e.g. {'fields': {field: reason}}")
    request_id: str | None = Field(None, description="also in the X-Request-ID header and the server log")


class ErrorResponse(BaseModel):
    error: ErrorDetail


# --- datasets ---------------------------------------------------------------------------------


class DatasetRegister(_In):
    """Register a dataset already on the server, under one of its configured data roots."""

    name: Name = Field(description="unique among your datasets")
    path: str = Field(min_length=1, max_length=4096, json_schema_extra=schema_rule({"pattern": NO_NUL}),
                      description="a folder under a data root (absolute, or relative to the first root); "
                                  "or, when the server sets nnUNet_raw to a folder inside the data roots, an "
                                  "nnU-Net dataset name or id as nnU-Net takes them ('Dataset003_ACDC', '3' or "
                                  "'003' for nnUNet_raw/Dataset003_ACDC; a folder of that name under a root "
                                  "wins); one that is not there, or not a valid dataset, is refused (422)")
    format: str | None = Field(None, description="detected if omitted",
                               json_schema_extra=schema_rule({"enum": FORMATS}))


def _form_text(rule: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A multipart text field's schema: ``rule`` applied, and no null (a form field is text or absent)."""
    apply = schema_rule(rule)

    def text_only(schema: dict[str, Any]) -> None:
        apply(schema)
        schema.pop("default", None)

    return text_only


class DatasetUpload(BaseModel):
    """multipart/form-data: ``file`` (a .zip, .tar, .tar.gz archive), optional ``name`` and ``format``."""

    file: bytes = Field(json_schema_extra={"format": "binary"},
                        description="a .zip, .tar or .tar.gz of the dataset folder: anything else is refused "
                                    "(400 not_an_archive), as is a damaged or unsafe archive (400)")
    name: str | SkipJsonSchema[None] = Field(None, description="default: the archive's file name without "
                                             "extension", json_schema_extra=_form_text(NAME_RULE))
    format: str | SkipJsonSchema[None] = Field(None, description="detected if omitted or empty",
                                               json_schema_extra=_form_text({"enum": [*FORMATS, ""]}))


class DatasetLinks(BaseModel):
    self: str


class DatasetOut(_Out):
    id: str
    name: str
    path: str
    format: str
    modality: str | None
    num_cases: int
    num_classes: int
    labels: Any = Field(description="{label id: class name}")
    synthetic: bool = Field(description="True for generated data, never patient images")
    status: DatasetStatus
    created_at: datetime
    links: DatasetLinks


class DatasetDetail(DatasetOut):
    report: dict[str, Any] | None = Field(description="the verification report stored at registration")


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


# --- jobs -------------------------------------------------------------------------------------


class SearchSubmit(_In):
    dataset_id: Id
    config: SearchConfigIn = Field(default_factory=SearchConfigIn)


ARCHITECTURE_KEYS = ("genotype_id", "search_job_id", "baseline")


class ArchitectureIn(_In):
    """Exactly one of ``genotype_id``, ``search_job_id`` or ``baseline``."""

    # "Exactly one" in the schema: each branch holds when its key is given and not null.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": [key], "properties": {key: {"type": "string"}}} for key in ARCHITECTURE_KEYS]})

    genotype_id: Id | None = Field(None, description="one of your genotypes")
    search_job_id: Id | None = Field(None, description="a succeeded search job of yours: its final genotype")
    baseline: Literal["unet", "unetpp"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ArchitectureIn:
        given = [k for k in ARCHITECTURE_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of genotype_id, search_job_id or baseline; got {given or 'none'}"
            )
        return self


class RetrainSubmit(_In):
    dataset_id: Id
    architecture: ArchitectureIn
    config: RetrainConfigIn = Field(default_factory=RetrainConfigIn)


class JobLinks(BaseModel):
    self: str
    cancel: str
    metrics: str
    artifacts: str
    alphas: str | None = None
    genotype: str | None = None
    dataset: str


class JobOut(_Out):
    id: str
    kind: JobKind
    status: JobStatus
    progress: float = Field(description="fraction done, 0..1")
    epoch: int = Field(description="epochs completed")
    epochs: int
    eta_seconds: float | None
    latest_metrics: dict[str, Any] | None
    error: str | None = Field(description="why a failed job failed, in words a person can act on")
    attempt: int
    max_attempts: int
    cancel_requested: bool
    dataset_id: str
    config: dict[str, Any]
    architecture: dict[str, Any] | None = Field(
        description="retrains: {'genotype': {...}, 'genotype_id'?, 'search_job_id'?} or {'baseline': name}"
    )
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    links: JobLinks


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


# --- history ----------------------------------------------------------------------------------


class EdgeOut(BaseModel):
    index: int = Field(description="row of the alphas matrix")
    node: int
    src: int = Field(description="0 = in_0, 1 = in_1, 2.. = earlier nodes")
    family: str
    ops: list[str] = Field(description="op names of the first len(ops) alpha columns of this row")


class CellSnapshotOut(BaseModel):
    cell_type: CellType
    alphas: list[Any]
    betas: list[Any] | None
    genotype: dict[str, Any] | None


class AlphaEpochOut(BaseModel):
    epoch: int
    cells: list[CellSnapshotOut]


class AlphaHistory(BaseModel):
    job_id: str
    edges: dict[str, list[EdgeOut]] = Field(description="per cell type, the label of every alphas row")
    items: list[AlphaEpochOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")
    next_after_epoch: int | None = Field(description="the same, as ?after_epoch=")


class GenotypeOut(_Out):
    id: str
    job_id: str | None
    epoch: int | None = Field(description="search epoch it was derived at; null for a final genotype")
    params: int | None
    genotype: dict[str, Any]
    created_at: datetime


class EpochMetricsOut(BaseModel):
    epoch: int
    splits: dict[Split, dict[str, Any]]


class CaseScoreOut(_Out):
    case_id: str
    class_index: int
    class_name: str
    dsc: float | None
    iou: float | None


class MetricsOut(BaseModel):
    job_id: str
    latest: dict[str, Any] | None
    epochs: list[EpochMetricsOut]
    cases: list[CaseScoreOut] = Field(description="per case and class Dice (DSC) and IoU of the best epoch on the "
                                                  "validation cases (which chose it), at each case's own size")
    test: dict[str, Any] | None = Field(None, description="retrains with test cases: the best model scored once "
                                                          "on them (summary and per_case), at each case's own size")


# --- artefacts --------------------------------------------------------------------------------


class ArtifactOut(_Out):
    name: str
    kind: ArtifactKind
    size: int
    sha256: str
    created_at: datetime
    download: str


class ArtifactList(BaseModel):
    items: list[ArtifactOut]


# --- health -----------------------------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str]
