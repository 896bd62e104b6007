"""Package layout: the repository's top-level folders install under one import name.

``realtime/``, ``models/``, ``calibration/`` and ``configs/`` stay at the top of the repository (the layout
the project is organised by) and install as ``brainstream.realtime``, ``brainstream.models``,
``brainstream.calibration`` and ``brainstream.configs``; ``brainstream/`` holds the application (CLI,
version). Everything else is in ``pyproject.toml``.
"""

from setuptools import find_packages, setup

MAPPED = {"realtime": "realtime", "models": "models", "calibration": "calibration"}

packages = ["brainstream"]
packages += [f"brainstream.{p}" for p in find_packages(where="brainstream")]
package_dir = {"brainstream": "brainstream"}
for name, folder in MAPPED.items():
    package_dir[f"brainstream.{name}"] = folder
    packages += [f"brainstream.{p}" for p in find_packages(include=[name, f"{name}.*"])]
# configs/ is a data package: its YAML files, one folder per kind, travel as package data
package_dir["brainstream.configs"] = "configs"
packages.append("brainstream.configs")

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"brainstream.configs": ["*/*.yaml"]},
    exclude_package_data={"brainstream.configs": ["*/*/*"]},
)
