"""A station record as an administrator gives it (API or `quantrac stations add|update`): taken whole or refused.

The domain models (`quantrac.domain`) drop a field they do not know, which is right for a record read back from the
store or the registry file, but not for one a person typed: `limit: {"max": 100}` saved COD with no limit at all.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from quantrac.domain import DetectorChannel, Limit, ParameterSpec, Station

STRICT = ConfigDict(extra="forbid", allow_inf_nan=False)
"""An unknown field is refused, not dropped (also `range: [0, 500]`, the registry file's spelling, had saved no
range), and every number is finite (a NaN limit is never exceeded)."""


class LimitIn(Limit):
    """`Limit` as an administrator gives it."""
    model_config = STRICT


class ParameterSpecIn(ParameterSpec):
    """`ParameterSpec` as an administrator gives it."""
    model_config = STRICT
    limit: LimitIn | None = None


class DetectorChannelIn(DetectorChannel):
    """`DetectorChannel` as an administrator gives it."""
    model_config = STRICT


class StationIn(Station):
    """`Station` as an administrator gives it: at least one parameter, names of a readable length (they are in every alert)."""
    model_config = STRICT
    name: str = Field(min_length=1, max_length=200)
    zone: str = Field(min_length=1, max_length=200, description=Station.model_fields["zone"].description)
    facility: str = Field(min_length=1, max_length=200)
    parameters: dict[str, ParameterSpecIn] = Field(min_length=1)  # type: ignore[assignment]  # a dict of the stricter spec: what is read is a ParameterSpec, and `record` hands on a plain Station
    channels: tuple[DetectorChannelIn, ...] | None = Field(None, description=Station.model_fields["channels"].description)

    def record(self) -> Station:
        """The station as the store and the pipeline hold it."""
        return Station.model_validate(self.model_dump())
