"""The package builds as an sdist and a wheel, with the locked build backend, and each installs
into a clean virtual environment (runtime dependencies from the lock) and runs."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import reconciler

ROOT = Path(__file__).resolve().parent.parent
UV = Path(sys.executable).parent / "uv"
LOCKS = ROOT / "requirements"


def run(*args: str | Path, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    run(UV, "build", "--quiet", "--sdist", "--wheel", "--out-dir", out,
        "--build-constraints", LOCKS / "build.txt", "--require-hashes", ROOT)  # fmt: skip
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_dist_installs_from_the_lock_and_runs(
    dists: dict[str, Path], kind: str, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv)
    python = venv / "bin" / "python"
    run(UV, "pip", "sync", "--quiet", "--python", python, "--require-hashes",
        LOCKS / "runtime.txt")  # fmt: skip
    run(UV, "pip", "install", "--quiet", "--python", python, "--no-deps",
        "--build-constraints", LOCKS / "build.txt", dists[kind])  # fmt: skip
    out = run(venv / "bin" / "reconciler", "--version", cwd=tmp_path)
    assert out.strip() == f"reconciler {reconciler.__version__}"
    # The installed package is the one built, not this checkout.
    where = run(python, "-c", "import reconciler; print(reconciler.__file__)", cwd=tmp_path)
    assert where.strip().startswith(str(venv)), where


def test_wheel_holds_the_package_only(dists: dict[str, Path]) -> None:
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"reconciler", f"reconciler-{reconciler.__version__}.dist-info"}, top
    assert "reconciler/py.typed" in names
    for shipped in ("app.css", "app.js"):  # the status page's files, served from the package
        assert f"reconciler/daemon/ui/static/{shipped}" in names, shipped
    with tarfile.open(dists["sdist"]) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("/pyproject.toml") for m in members)
    assert not any("/.venv/" in m or "/.bench/" in m for m in members)


def _pins(lock: Path) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\\n;]+)", lock.read_text(), re.MULTILINE)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in found}


@pytest.mark.parametrize(("group", "lock"), [("runtime", "runtime.txt"), ("dev", "dev.txt")])
def test_every_declared_dependency_is_locked_within_its_range(group: str, lock: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    if group == "dev":
        declared += project["optional-dependencies"]["dev"]
    pins = _pins(LOCKS / lock)
    for text in declared:
        requirement = Requirement(text)
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{requirement.name} is declared in pyproject.toml but not in {lock}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside pyproject.toml's {requirement.specifier}"
        )


def test_runtime_and_dev_locks_agree() -> None:
    runtime, dev = _pins(LOCKS / "runtime.txt"), _pins(LOCKS / "dev.txt")
    moved = {n: (v, dev.get(n)) for n, v in runtime.items() if dev.get(n) != v}
    assert not moved, f"runtime and dev locks pin different versions: {moved}"
