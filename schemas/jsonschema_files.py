"""The JSON Schema (draft 2020-12) files shipped beside this module.

``event`` is the input contract of ``schemas/events.py`` (which stays the
validator on the hot path); ``alert`` and ``score`` describe the outputs on
``shop.alerts`` and ``shop.scores``. All three follow shared/spec/events.md.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

NAMES = ("event", "alert", "score")


@cache
def _text(name: str) -> str:
    if name not in NAMES:
        raise KeyError(f"unknown schema {name!r}; one of {', '.join(NAMES)}")
    return resources.files("shopwatch.schemas").joinpath(f"{name}.schema.json").read_text(encoding="utf-8")


def load(name: str) -> dict:
    """The schema ``name`` (``event``, ``alert`` or ``score``) as a fresh dict."""
    return json.loads(_text(name))
