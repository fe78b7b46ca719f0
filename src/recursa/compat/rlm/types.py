"""The official library's result types, filled from a recursa run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class ModelUsageSummary:
    """One model's share of the run, under the official field names."""

    total_calls: int = 0
    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cost: float = 0.0


@dataclass(slots=True)
class UsageSummary:
    model_usage_summaries: dict[str, ModelUsageSummary] = field(default_factory=dict)

    @classmethod
    def of(cls, usage: dict[str, Any]) -> UsageSummary:
        """From recursa's `usage` (its `by_model` table); models keep their recursa names."""
        return cls(
            {
                model: ModelUsageSummary(
                    total_calls=int(row.get("llm_calls", 0)),
                    total_input_tokens=int(row.get("input_tokens", 0)),
                    total_output_tokens=int(row.get("output_tokens", 0)),
                    total_cost=float(row.get("cost_usd", 0.0)),
                )
                for model, row in usage.get("by_model", {}).items()
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_usage_summaries": {m: asdict(s) for m, s in self.model_usage_summaries.items()}
        }


@dataclass(slots=True)
class RLMChatCompletion:
    """What `RLM.completion` returns: the official fields. `metadata` holds recursa's
    run id, status, iterations and full usage; `error` is set when the run did not end ok."""

    root_model: str
    prompt: Any
    response: str
    usage_summary: UsageSummary
    execution_time: float
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage_summary"] = self.usage_summary.to_dict()
        return data
