"""Installing like a user: build the wheel, install it into a fresh virtual environment, run it elsewhere.

The fresh environment gets the wheel and nothing from the repository. Its third-party dependencies (torch,
mne, Qt, ...) are those of the environment running the tests, reached through a ``.pth`` path line: a second
copy of several GB would add minutes to every run, and what is tested here is the package itself (its files,
its metadata, its entry point, its config lookup). ``.pth`` files inside that path are not processed, so
the repository's editable install stays invisible.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # setuptools builds in the tree's build/; a stale copy of a deleted module there would enter the wheel
    shutil.rmtree(REPO / "build", ignore_errors=True)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
         str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (path,) = out.glob("brainstream-*.whl")
    return path


@pytest.fixture(scope="module")
def user_env(wheel, tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    """``(bin folder, environment, working folder)`` of a fresh venv holding only the wheel."""
    root = tmp_path_factory.mktemp("user")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    deps = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "BRAINSTREAM_CONFIG_PATH"}}
    env["QT_QPA_PLATFORM"] = "offscreen"
    work = root / "elsewhere"
    work.mkdir()
    return venv / "bin", env, work


def test_the_wheel_carries_the_configs_and_the_demo_encoder_but_no_tests(wheel) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for kind, name in [("pipelines", "demo_meg"), ("devices", "ctf275_things_meg"), ("training", "demo_meg"),
                       ("calibration", "rsvp"), ("generator", "tiny"), ("generator", "demo")]:  # fmt: skip
        assert f"brainstream/configs/{kind}/{name}.yaml" in names
    assert "brainstream/realtime/session/assets/demo_encoder/model.safetensors" in names
    assert "brainstream/realtime/session/assets/demo_encoder_causal/model.safetensors" in names
    assert "brainstream/realtime/session/assets/demo_generator/generator.safetensors" in names
    assert "brainstream/realtime/session/assets/demo_generator/prior.safetensors" in names
    tops = {n.split("/")[0] for n in names}
    assert tops == {"brainstream", wheel.name.split("-py")[0] + ".dist-info"}, tops
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: BSD-3-Clause" in metadata
    assert "Requires-Dist: torch==" not in metadata  # a range, never an exact pin


def test_the_installed_package_is_the_wheel_not_the_repository(user_env) -> None:
    bin_dir, env, work = user_env
    out = _run(
        [str(bin_dir / "python"), "-c", "import brainstream.realtime as r; print(r.__file__)"], work, env
    )
    assert out.returncode == 0, out.stderr
    assert str(REPO) not in out.stdout and "site-packages" in out.stdout


def test_version_and_config_list_from_another_folder(user_env) -> None:
    bin_dir, env, work = user_env
    version = _run([str(bin_dir / "brainstream"), "--version"], work, env)
    assert version.returncode == 0 and version.stdout.startswith("brainstream "), version.stderr
    listing = _run([str(bin_dir / "brainstream"), "config", "list", "--json"], work, env)
    assert listing.returncode == 0, listing.stderr
    configs = json.loads(listing.stdout.strip().splitlines()[-1])["configs"]
    shipped = {(c["kind"], c["name"]) for c in configs if c["origin"] == "shipped"}
    assert ("pipelines", "demo_meg") in shipped and ("devices", "ctf275_things_meg") in shipped
    assert all("site-packages" in c["path"] for c in configs)


def test_a_user_config_folder_shadows_a_shipped_config(user_env, tmp_path) -> None:
    bin_dir, env, work = user_env
    mine = tmp_path / "my-configs" / "generator"
    mine.mkdir(parents=True)
    shipped = _run([str(bin_dir / "brainstream"), "config", "show", "tiny", "--json"], work, env)
    config = json.loads(shipped.stdout.strip().splitlines()[-1])["config"]
    (mine / "tiny.yaml").write_text(json.dumps({**config, "name": "my-tiny"}))
    shown = _run([str(bin_dir / "brainstream"), "--config-dir", str(mine.parent), "config", "show", "tiny",
                  "--json"], work, env)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    result = json.loads(shown.stdout.strip().splitlines()[-1])
    assert result["file"] == str(mine / "tiny.yaml") and result["config"]["name"] == "my-tiny"


@pytest.mark.parametrize(
    "argv",
    [
        ["config", "show", "no-such-config", "--json"],
        ["demo", "--seconds", "1", "--config", "no-such-pipeline", "--json"],
        ["--config-dir", "/no/such/folder", "config", "list", "--json"],
    ],
)
def test_a_user_error_is_one_line_and_a_json_error_object(user_env, argv) -> None:
    bin_dir, env, work = user_env
    out = _run([str(bin_dir / "brainstream"), *argv], work, env)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "error" in json.loads(out.stdout.strip().splitlines()[-1])


def test_the_demo_runs_from_the_installed_wheel(user_env) -> None:
    bin_dir, env, work = user_env
    out = _run([str(bin_dir / "brainstream"), "demo", "--seconds", "10", "--headless", "--json"], work, env,
               timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["windows"] > 0 and summary["dropped_samples"] == 0
    assert Path(summary["recording"]).is_file() and str(work) in summary["recording"]
