"""Package layout: the repository's top-level folders install under one import name.

``realtime/``, ``models/``, ``calibration/`` and ``configs/`` stay at the top of the repository (the layout
the project is organised by) and install as ``brainstream.realtime``, ``brainstream.models``,
``brainstream.calibration`` and ``brainstream.configs``; ``brainstream/`` holds the application (CLI,
version, config kinds). Folders of data (configs, the shipped demo encoder) are namespace packages, so their
files travel as package data. Everything else is in ``pyproject.toml``.
"""

from setuptools import find_namespace_packages, setup

FOLDERS = ("realtime", "models", "calibration", "configs")


def _packages(where: str = ".", include: tuple[str, ...] = ("*",)) -> list[str]:
    return find_namespace_packages(where=where, include=list(include), exclude=["*__pycache__*"])


packages = ["brainstream", *(f"brainstream.{p}" for p in _packages("brainstream"))]
package_dir = {"brainstream": "brainstream"}
for folder in FOLDERS:
    package_dir[f"brainstream.{folder}"] = folder
    packages += [f"brainstream.{p}" for p in _packages(include=(folder, f"{folder}.*"))]

setup(packages=packages, package_dir=package_dir)
