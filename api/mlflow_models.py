"""Request bodies of the MLflow protocol (the fields ``mlflow.MlflowClient`` sends).

Unknown fields are ignored (MLflow sends both ``run_id`` and the legacy ``run_uuid``, and
newer clients add fields); limits follow MLflow's own (1000 metrics, 100 params and 100
tags per batch).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import UserInputError

__all__ = ["KV", "CreateExperiment", "CreateRun", "DeleteTag", "ExperimentRef", "ExperimentTag",
           "LogBatch", "LogMetric", "LogOutputs", "LogParam", "MetricIn", "ModelOutput", "RunRef",
           "SearchExperiments", "SearchRuns", "SetTag", "UpdateExperiment", "UpdateRun"]

_RUN_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")
Key = Annotated[str, Field(min_length=1, max_length=250)]


class _M(BaseModel):
    model_config = ConfigDict(extra="ignore")


class KV(_M):
    key: Key
    value: Annotated[str, Field(max_length=65_536)] = ""


class MetricIn(_M):
    key: Key
    value: float
    timestamp: int = Field(default=0, ge=0, le=10**15)
    step: int = Field(default=0, lt=(1 << 63) - 1)  # the SDK's bound (int64 steps)
    # MLflow 3: a metric of a logged model (and of the dataset it was computed on)
    model_id: str | None = Field(default=None, max_length=200)
    dataset_name: str | None = Field(default=None, max_length=500)
    dataset_digest: str | None = Field(default=None, max_length=500)

    @field_validator("step")
    @classmethod
    def _step_from_zero(cls, v: int) -> int:
        # MLflow accepts negative steps; assay's store (and its ingester) keeps steps >= 0,
        # so refuse here with a reason rather than drop the points at ingest.
        if v < 0:
            raise ValueError("assay stores steps >= 0 (MLflow would accept a negative step); "
                             "offset the steps so they start at 0")
        return v


class RunRef(_M):
    run_id: str | None = Field(default=None, max_length=64)
    run_uuid: str | None = Field(default=None, max_length=64)

    def rid(self) -> str:
        rid = self.run_id or self.run_uuid or ""
        if not _RUN_RE.match(rid):
            raise UserInputError(f"invalid run id {rid!r}", hint="pass run_id (letters, digits)")
        return rid


class CreateExperiment(_M):
    name: Annotated[str, Field(min_length=1, max_length=500)]
    artifact_location: str | None = Field(default=None, max_length=2000)
    tags: list[KV] = Field(default_factory=list, max_length=100)


class ExperimentRef(_M):
    experiment_id: Annotated[str, Field(max_length=32)]


class UpdateExperiment(ExperimentRef):
    new_name: Annotated[str, Field(min_length=1, max_length=500)]


class ExperimentTag(ExperimentRef):
    key: Key
    value: Annotated[str, Field(max_length=65_536)] = ""


class SearchExperiments(_M):
    max_results: int = Field(default=1000, ge=1, le=50_000)
    page_token: str | None = Field(default=None, max_length=100)
    filter: str | None = Field(default=None, max_length=10_000)
    order_by: list[str] = Field(default_factory=list, max_length=20)
    view_type: str | int = "ACTIVE_ONLY"


class CreateRun(_M):
    experiment_id: Annotated[str, Field(max_length=32)] = "0"
    user_id: str = Field(default="", max_length=256)
    start_time: int | None = Field(default=None, ge=0, le=10**15)
    tags: list[KV] = Field(default_factory=list, max_length=1000)
    run_name: str | None = Field(default=None, max_length=250)


class UpdateRun(RunRef):
    status: str | None = Field(default=None, pattern="^(RUNNING|SCHEDULED|FINISHED|FAILED|KILLED)$")
    end_time: int | None = Field(default=None, ge=0, le=10**15)
    run_name: str | None = Field(default=None, max_length=250)


class SearchRuns(_M):
    experiment_ids: list[Annotated[str, Field(max_length=32)]] = Field(default_factory=list,
                                                                      max_length=1000)
    filter: str | None = Field(default=None, max_length=10_000)
    run_view_type: str | int = "ACTIVE_ONLY"
    max_results: int = Field(default=1000, ge=1, le=50_000)
    order_by: list[str] = Field(default_factory=list, max_length=20)
    page_token: str | None = Field(default=None, max_length=100)


class LogBatch(RunRef):
    metrics: list[MetricIn] = Field(default_factory=list, max_length=1000)
    params: list[KV] = Field(default_factory=list, max_length=100)
    tags: list[KV] = Field(default_factory=list, max_length=100)


class LogMetric(RunRef, MetricIn):
    pass


class LogParam(RunRef, KV):
    pass


class SetTag(RunRef, KV):
    pass


class DeleteTag(RunRef):
    key: Key


class ModelOutput(_M):
    model_id: Annotated[str, Field(min_length=1, max_length=200)]
    step: int = Field(default=0, ge=-(1 << 63), lt=1 << 63)


class LogOutputs(RunRef):
    models: list[ModelOutput] = Field(max_length=1000)
