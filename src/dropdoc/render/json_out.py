"""JSON output: the dropdoc.diagnosis/1 contract (model.Diagnosis.to_dict)."""

from __future__ import annotations

import json
from typing import Any


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, default=str)
