"""brainstream: real-time decoding of visual perception from MEG/EEG over Lab Streaming Layer.

The installed package has three layers and an application on top (``docs/architecture.md``):
``brainstream.models`` (what learns or infers), ``brainstream.realtime`` (what runs during a session, built on
models), ``brainstream.calibration`` (adapting to one person, built on both), and ``brainstream.cli`` (the
``brainstream`` command). Shipped configs are the data package ``brainstream.configs``.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainstream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
