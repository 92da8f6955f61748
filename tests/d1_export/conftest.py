"""The export run as the CLI runs it: `run()` on arguments parsed by `add_arguments`' parser."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.d1_export import add_arguments, run


@dataclass(frozen=True)
class ExportRun:
    code: int
    out: str
    err: str
    out_dir: Path

    def manifest(self) -> Any:
        return json.loads((self.out_dir / "manifest.json").read_text(encoding="utf-8"))

    def oversize(self) -> Any:
        return json.loads((self.out_dir / "oversize.json").read_text(encoding="utf-8"))


Export = Callable[..., ExportRun]


@pytest.fixture
def export_d1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Export:
    """export_d1(db, *options, out=tmp_path/"export") -> ExportRun."""

    def export(db: Path, *options: str, out: Path | None = None) -> ExportRun:
        out_dir = out or tmp_path / "export"
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        code = run(parser.parse_args(["--db", str(db), "--out", str(out_dir), *options]))
        captured = capsys.readouterr()
        return ExportRun(code, captured.out, captured.err, out_dir)

    return export
