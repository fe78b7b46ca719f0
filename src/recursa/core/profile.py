"""Controller profiles: everything that steers the root model, as one small versioned file.

A profile holds the system prompt, the first-turn instruction, the chunk-size hint, the
sub-model, `max_iterations`, the guard thresholds and the strategy (with auto's threshold).
Its id is the hash of its content, so every run says exactly which profile produced it
(`run_start`, the run store, the viewer), and `recursa tune` can pin the one it found.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import prompts
from .guards import GuardSettings

VERSION = 1
"""The profile format this recursa reads and writes."""

STRATEGIES = ("rlm", "direct", "auto")


@dataclass(frozen=True, slots=True)
class Profile:
    """The controller's knobs. `first_turn` follows the question in the first message when
    there is a context; `chunk_chars` is the size the system prompt says one sub-query
    can read (its `{sub_window}`); `direct_below_chars` is auto's threshold (None: from
    the model's window)."""

    system_prompt: str = prompts.SYSTEM
    first_turn: str = prompts.FIRST_TURN
    chunk_chars: int = 100_000
    sub_model: str | None = None
    max_iterations: int = 30
    guards: dict[str, Any] = field(default_factory=lambda: dataclasses.asdict(GuardSettings()))
    strategy: str = "rlm"
    direct_below_chars: int | None = None
    name: str = "builtin"

    def __post_init__(self) -> None:
        for key in ("system_prompt", "first_turn", "name"):
            if not isinstance(getattr(self, key), str):
                raise ConfigError(f"profile {key} must be text, not {getattr(self, key)!r}")
        for key in ("chunk_chars", "max_iterations"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                raise ConfigError(f"profile {key} must be a whole number >= 1, not {value!r}")
        if self.sub_model is not None and not isinstance(self.sub_model, str):
            raise ConfigError(f"profile sub_model must be a model name, not {self.sub_model!r}")
        if self.strategy not in STRATEGIES:
            why = f"profile strategy must be rlm, direct or auto, not {self.strategy!r}"
            raise ConfigError(why)
        below = self.direct_below_chars
        if below is not None and (type(below) is not int or below < 1):
            raise ConfigError(f"profile direct_below_chars must be >= 1 or null, not {below!r}")
        self.guard_settings()  # checks the thresholds now, not at the first turn

    @property
    def id(self) -> str:
        """`p-` and the first 12 hex digits of the SHA-256 of the content (name included)."""
        text = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)
        return "p-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def guard_settings(self) -> GuardSettings:
        if not isinstance(self.guards, dict):
            raise ConfigError(f"profile guards must be a table, not {self.guards!r}")
        known = {f.name for f in dataclasses.fields(GuardSettings)}
        unknown = sorted(set(self.guards) - known)
        if unknown:
            raise ConfigError(f"profile guards: unknown {', '.join(unknown)}")
        return GuardSettings(**self.guards)

    def to_dict(self) -> dict[str, Any]:
        return {"version": VERSION, **dataclasses.asdict(self)}

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def replace(self, **changes: Any) -> Profile:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Any, where: str = "profile") -> Profile:
        """A profile from its file's content: `version` must be one this recursa reads;
        an unknown key is refused (a typo would otherwise be a silent default)."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a table of settings")
        data = dict(data)
        version = data.pop("version", None)
        if version != VERSION:
            raise ConfigError(f"{where}: version must be {VERSION}, not {version!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting {', '.join(unknown)}")
        try:
            return cls(**data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        """A profile file: TOML when its name ends in .toml, else JSON."""
        try:
            raw = Path(path).read_bytes()
            text = raw.decode("utf-8")
            data = tomllib.loads(text) if str(path).endswith(".toml") else json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"profile {path}: {why}") from None
        return cls.from_dict(data, f"profile {path}")


BUILTIN = Profile()
"""Today's defaults: what a run uses when no profile is given."""


def resolve(profile: Profile | str | Path | None) -> Profile:
    """A profile given as itself, a file's path, or None (the built-in one)."""
    if profile is None:
        return BUILTIN
    if isinstance(profile, Profile):
        return profile
    return Profile.load(profile)
