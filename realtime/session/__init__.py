"""Session orchestration: the process supervisor behind ``brainstream live`` and ``brainstream demo``."""

from brainstream.realtime.session.supervisor import NodeSpec, Supervisor

__all__ = ["NodeSpec", "Supervisor"]
