"""`RLMLogger`: the official logger's place, writing the official log format (JSON lines)
through recursa's writer (`recursa.trace.official`), one file per completion."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from ...trace.official import OfficialTrace


class RLMLogger:
    """Give to `RLM(logger=...)`: each completion writes `LOG_DIR/FILE_NAME_<time>_<id>.jsonl`,
    readable by `recursa view`, `mine` and `replay` as well as by the official tools."""

    def __init__(self, log_dir: str | Path, file_name: str = "rlm") -> None:
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.file_name = file_name
        self.log_file_path: Path | None = None
        """The file of the latest completion."""

    def open(self) -> OfficialTrace:
        """A writer for the next completion's log (closed by the caller when it ends)."""
        stamp = datetime.now(UTC).strftime("%Y-%m-%d_%H-%M-%S")
        self.log_file_path = self.log_dir / f"{self.file_name}_{stamp}_{uuid.uuid4().hex[:8]}.jsonl"
        return OfficialTrace(self.log_file_path)
