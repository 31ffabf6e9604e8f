"""Build what a sysadmin copies to a server with no internet: offline bundles and packages.

    scripts/bundle [--out DIR] [--arch x86_64,aarch64] [--no-packages]

For the agent and for the collector it makes, in ``--out`` (default ``dist/``):

* ``sisguard-agent-<version>.tar.gz``: the agent's wheel and the wheels of its
  dependencies for CPython 3.9 to 3.13 on x86_64 and aarch64 (manylinux), the systemd
  unit, the example config and ``install-agent.sh``; ``sisguard-collector-<version>.tar.gz``
  likewise (CPython 3.11 to 3.13), with the shipped rules;
* ``.deb`` and ``.rpm`` packages of each, per architecture, from one nfpm description each
  (``deploy/packaging/nfpm-<product>.yaml``), holding the same wheels and install script: the
  package's post-install step builds the private virtual environment with that script.

Dependency wheels are downloaded once into ``$SISGUARD_CACHE/wheels`` (default
``~/.cache/sisguard``); a later build reads them from there without asking PyPI.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "deploy" / "packaging"
CACHE = Path(os.environ.get("SISGUARD_CACHE", Path.home() / ".cache" / "sisguard")) / "wheels"
# Oldest glibc first: a wheel for a newer manylinux is taken only if no older one exists.
PLATFORMS = {
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"],
    "aarch64": ["manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64"],
}
DEB_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass(frozen=True)
class Product:
    name: str                   # sisguard-agent / sisguard-collector
    pythons: tuple[str, ...]    # CPython versions the wheels are for
    requirements: tuple[str, ...]


def _pyproject() -> dict[str, object]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def version() -> str:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    return str(project["version"])


def _dependencies() -> list[str]:
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    return [str(d) for d in project["dependencies"]]


AGENT_DEPENDENCIES = ("psutil", "grpcio", "protobuf", "pyyaml", "cryptography",
                      "yara-python")


def agent_requirements() -> tuple[str, ...]:
    """The collector's pins, for the agent's dependencies only (one source of truth)."""
    wanted = []
    for dep in _dependencies():
        name = dep.split(">")[0].split("<")[0].split("=")[0].strip().lower()
        if name in AGENT_DEPENDENCIES:
            wanted.append(dep)
    return tuple(wanted)


AGENT_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "sisguard-agent"
version = "{version}"
description = "sisguard agent: file integrity, processes, sockets and logins, shipped over mTLS"
requires-python = ">=3.9"
license = {{ text = "Apache-2.0" }}
dependencies = {dependencies}

[project.scripts]
sisguard-agent = "agent.cli:main"

[tool.setuptools.packages.find]
where = ["."]
include = ["agent*", "common*", "sisguard*"]

[tool.setuptools.package-data]
"*" = ["*.pyi", "py.typed", "*.yml", "*.yaml", "*.json"]
"""


def say(message: str) -> None:
    print(f"bundle: {message}", file=sys.stderr, flush=True)


def run(*cmd: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(c) for c in cmd], check=True, cwd=cwd)


def _copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def build_agent_wheel(out: Path) -> Path:
    """The agent alone (agent/, common/ and the wire stubs) as a py3 wheel for 3.9+."""
    with tempfile.TemporaryDirectory(prefix="sisguard-agent-src-") as tmp:
        src = Path(tmp)
        _copy_tree(REPO / "agent", src / "agent")
        _copy_tree(REPO / "common", src / "common")
        _copy_tree(REPO / "proto" / "sisguard", src / "sisguard")
        deps = "[" + ", ".join(f'"{d}"' for d in agent_requirements()) + "]"
        (src / "pyproject.toml").write_text(
            AGENT_PYPROJECT.format(version=version(), dependencies=deps))
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, src)
    return _one(out, "sisguard_agent-*.whl")


def build_collector_wheel(out: Path) -> Path:
    """The whole project (collector, rules CLI, and the agent beside it) as a wheel."""
    with tempfile.TemporaryDirectory(prefix="sisguard-src-") as tmp:
        src = Path(tmp)
        for name in ("agent", "collector", "common", "proto"):
            _copy_tree(REPO / name, src / name)
        shutil.copy2(REPO / "pyproject.toml", src / "pyproject.toml")
        shutil.copy2(REPO / "README.md", src / "README.md")
        run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, src)
    return _one(out, "sisguard-*.whl")


def _one(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"bundle: no {pattern} in {directory}")
    return found[-1]


def download_dependencies(requirements: tuple[str, ...], python: str, arch: str) -> Path:
    """Binary wheels of ``requirements`` (and theirs) for one CPython and one architecture."""
    tag = f"cp{python.replace('.', '')}"
    dest = CACHE / f"{tag}-{arch}"
    stamp = dest / ".requirements"
    wanted = "\n".join(sorted(requirements))
    if stamp.exists() and stamp.read_text() == wanted:
        return dest
    say(f"downloading wheels for CPython {python} on {arch} (once, into {dest})")
    dest.mkdir(parents=True, exist_ok=True)
    cmd: list[str | Path] = [sys.executable, "-m", "pip", "download", "--quiet",
                             "--only-binary=:all:", "--dest", dest, "--python-version", python,
                             "--implementation", "cp", "--abi", tag, "--abi", "abi3",
                             "--abi", "none"]
    for platform in PLATFORMS[arch]:
        cmd += ["--platform", platform]
    run(*cmd, *requirements)
    stamp.write_text(wanted)
    return dest


def gather_wheels(product: Product, own_wheel: Path, archs: list[str], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(own_wheel, dest / own_wheel.name)
    for arch in archs:
        for python in product.pythons:
            for wheel in download_dependencies(product.requirements, python, arch).glob("*.whl"):
                if not (dest / wheel.name).exists():
                    shutil.copy2(wheel, dest / wheel.name)


def _arch_of(wheel: str) -> str | None:
    for arch in PLATFORMS:
        if wheel.endswith(f"_{arch}.whl"):
            return arch
    return None


def stage_product(product: Product, wheels: Path, stage: Path, *, arch: str | None,
                  release: str) -> None:
    """The files of one product as they are laid out in its bundle (and package)."""
    short = product.name.removeprefix("sisguard-")
    (stage / "wheels").mkdir(parents=True)
    for wheel in wheels.glob("*.whl"):
        if arch is None or _arch_of(wheel.name) in (None, arch):
            shutil.copy2(wheel, stage / "wheels" / wheel.name)
    shutil.copy2(PACKAGING / f"install-{short}.sh", stage / f"install-{short}.sh")
    shutil.copy2(PACKAGING / "install-common.sh", stage / "install-common.sh")
    shutil.copy2(REPO / "deploy" / "systemd" / f"{product.name}.service",
                 stage / f"{product.name}.service")
    shutil.copy2(REPO / "deploy" / "config" / f"{short}.yml", stage / f"{short}.yml")
    (stage / "VERSION").write_text(f"{version()}-{release}\n")
    if short == "collector":
        _copy_tree(REPO / "rules", stage / "rules")
    (stage / "pkg").mkdir()
    for script in (PACKAGING / "pkg").glob("*.sh"):
        text = script.read_text().replace("@PRODUCT@", short)
        (stage / "pkg" / script.name).write_text(text)
        (stage / "pkg" / script.name).chmod(0o755)
    for script in stage.glob("*.sh"):
        script.chmod(0o755)


def make_bundle(product: Product, wheels: Path, out: Path, *, release: str) -> Path:
    name = f"{product.name}-{version()}"
    with tempfile.TemporaryDirectory(prefix="sisguard-bundle-") as tmp:
        stage = Path(tmp) / name
        stage_product(product, wheels, stage, arch=None, release=release)
        target = out / f"{name}.tar.gz"
        # the wheels are compressed already: a light gzip level costs seconds, not minutes
        with tarfile.open(target, "w:gz", compresslevel=1) as tar:
            tar.add(stage, arcname=name, filter=_root_owned)
    return target


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def nfpm() -> str:
    found = shutil.which("nfpm") or next(
        (str(p) for p in (Path.home() / "go" / "bin" / "nfpm", CACHE.parent / "bin" / "nfpm")
         if p.exists()), None)
    if not found:
        raise SystemExit("bundle: nfpm not found (scripts/bundle installs it with 'go install')")
    return found


def make_packages(product: Product, wheels: Path, out: Path, archs: list[str], *,
                  release: str) -> list[Path]:
    made = []
    short = product.name.removeprefix("sisguard-")
    for arch in archs:
        with tempfile.TemporaryDirectory(prefix="sisguard-pkg-") as tmp:
            stage = Path(tmp) / "stage"
            stage_product(product, wheels, stage, arch=arch, release=release)
            env = {**os.environ, "SISGUARD_VERSION": version(), "SISGUARD_ARCH": DEB_ARCH[arch],
                   "SISGUARD_RELEASE": release}
            for packager in ("deb", "rpm"):
                before = set(out.iterdir())
                # nfpm reads the sources relative to its working directory: the stage
                subprocess.run([nfpm(), "package", "--config",
                                str(PACKAGING / f"nfpm-{short}.yaml"), "--packager", packager,
                                "--target", str(out)], check=True, env=env, cwd=stage,
                               stdout=subprocess.DEVNULL)
                made += sorted(set(out.iterdir()) - before)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bundle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--arch", default="x86_64,aarch64")
    parser.add_argument("--no-packages", action="store_true", help="bundles only")
    parser.add_argument("--no-bundles", action="store_true", help="packages only")
    parser.add_argument("--only", choices=["agent", "collector"], default=None)
    parser.add_argument("--release", default="1",
                        help="the package release (bump it to rebuild the same version)")
    args = parser.parse_args(argv)
    archs = [a for a in args.arch.split(",") if a]
    unknown = [a for a in archs if a not in PLATFORMS]
    if unknown:
        parser.error(f"--arch: unknown {unknown[0]!r} (known: {', '.join(PLATFORMS)})")
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    products = {
        "agent": Product("sisguard-agent", ("3.9", "3.10", "3.11", "3.12", "3.13"),
                         agent_requirements()),
        "collector": Product("sisguard-collector", ("3.11", "3.12", "3.13"),
                             tuple(_dependencies())),
    }
    for short, product in products.items():
        if args.only and short != args.only:
            continue
        with tempfile.TemporaryDirectory(prefix="sisguard-wheels-") as tmp:
            wheels = Path(tmp) / "all"
            say(f"building the {short} wheel")
            (Path(tmp) / "own").mkdir()
            own = (build_agent_wheel if short == "agent" else build_collector_wheel)(
                Path(tmp) / "own")
            gather_wheels(product, own, archs, wheels)
            if not args.no_bundles:
                bundle = make_bundle(product, wheels, out, release=args.release)
                say(f"{bundle} ({bundle.stat().st_size / 1e6:.1f} MB)")
            if not args.no_packages:
                for package in make_packages(product, wheels, out, archs,
                                             release=args.release):
                    say(f"{package} ({package.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
