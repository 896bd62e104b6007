"""Shared test fixtures. LSL tests use a unique stream name per test so parallel or repeated runs never
resolve each other's streams."""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def unique_name(request) -> str:
    """A stream / source name no other test uses."""
    return f"bstest-{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"
