"""An offline bundle of what augforge and its GPU check need on an air-gapped GPU machine, in parts that fit
one upload each; and its installation there, from the bundle alone.

    python scripts/gpu_bundle.py make --out DIR [--python-version 3.12] [--part-mib 56] [--find-links DIR]
    python scripts/gpu_bundle.py install --bundle DIR --target SITE

``make`` reads augforge's requirements (pyproject.toml: the dependencies and the ``gpu`` extra), leaves out
every package the target image already has (``scripts/gpu-image-packages.txt``), and downloads the wheels of
the rest and of their own requirements for the target Python and platform (``pip download --no-deps
--only-binary=:all:``, each requirement's markers evaluated for the target). The wheels go into one tar,
cut into parts of at most ``--part-mib`` MiB (``part-000``, ...), with ``bundle.json``: every part's and
wheel's size and sha256, the tar's sha256, the target and the requirements it was made for.

``install`` (run by the target Python) joins the parts, checks every sha256, installs the wheels into
``--target`` with ``pip --no-index --no-deps --no-cache-dir`` (no registry is ever asked) and then checks
that the requirements hold with the image's packages and the bundle's together. Anything missing stops it
with one line naming the part or the wheel; a version outside a requirement's range is a warning line.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "scripts" / "gpu-image-packages.txt"
#: parts of at most this many MiB: a part plus the repository fits one 64 MiB upload
PART_MIB = 56
MANIFEST = "bundle.json"
#: manylinux tags pip is told the target accepts (pip matches each exactly); the image's glibc is 2.39
PLATFORMS = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{n}_x86_64" for n in range(5, 40))]


class BundleError(SystemExit):
    """One line for the user, and exit status 1."""

    def __init__(self, message: str) -> None:
        super().__init__(f"gpu-bundle: {message}")


def normalized(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return "".join("-" if c in "-_." else c for c in name.lower()).replace("--", "-")


def image_packages(path: Path = IMAGE) -> set[str]:
    """The names the target image already has (one per line; ``#`` starts a comment)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(normalized(line))
    return names


def project_requirements(extra: str = "gpu") -> list[str]:
    """augforge's dependencies and its ``extra`` (pyproject.toml)."""
    import tomllib  # Python 3.11+

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return list(project["dependencies"]) + list(project.get("optional-dependencies", {}).get(extra, []))


def target_environment(python_version: str) -> dict:
    """The marker environment of CPython ``python_version`` on Linux x86_64."""
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "platform_python_implementation": "CPython", "implementation_name": "cpython",
            "implementation_version": f"{python_version}.0", "platform_release": "", "platform_version": "",
            "extra": ""}


def applies(requirement, environment: dict, extras=()) -> bool:
    """Whether ``requirement``'s marker holds in ``environment`` for its parent's ``extras`` (or none)."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras))


def wheel_requirements(path: Path) -> list[str]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(path) as wheel:
        metadata = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        text = wheel.read(metadata).decode("utf-8")
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


def download(requirements: list[str], into: Path, python_version: str, find_links: str | None) -> None:
    """``pip download --no-deps`` of ``requirements`` for the target, into ``into``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--python-version", python_version, "--implementation", "cp", "-d", str(into)]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    if find_links:
        command += ["--no-index", "--find-links", find_links]
    done = subprocess.run(command + requirements, capture_output=True, text=True)
    if done.returncode != 0:
        why = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()[-1:]
        raise BundleError(f"pip could not download {', '.join(requirements)} for Python {python_version}: "
                          f"{why[0].strip() if why else 'no reason given'}")


def resolve(requirements: list[str], image: set[str], python_version: str, into: Path,
            find_links: str | None = None, log=print, left: set | None = None) -> dict[str, Path]:
    """The wheels (name -> file in ``into``) of ``requirements`` and of everything they require, for the target,
    leaving out what the image has (their names are added to ``left``). Specifiers of one name from several
    requirers are combined; a wheel that a later specifier excludes is fetched again within all of them."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import parse_wheel_filename

    environment = target_environment(python_version)
    specs: dict[str, SpecifierSet] = {}
    wheels: dict[str, Path] = {}
    pending = [(Requirement(text), ()) for text in requirements]
    while pending:
        wanted = {}
        for requirement, parent_extras in pending:
            name = normalized(requirement.name)
            if name == "augforge" or not applies(requirement, environment, parent_extras):
                continue
            if name in image:
                if left is not None:
                    left.add(name)
                continue
            specs[name] = specs.get(name, SpecifierSet()) & requirement.specifier
            have = wheels.get(name)
            if have is None or not specs[name].contains(parse_wheel_filename(have.name)[1], prereleases=True):
                wanted[name] = sorted(set(wanted.get(name, ())) | set(requirement.extras))
        pending = []
        if not wanted:
            break
        before = set(into.iterdir())
        download([f"{name}{specs[name]}" for name in sorted(wanted)], into, python_version, find_links)
        for path in sorted(set(into.iterdir()) - before):
            name = normalized(parse_wheel_filename(path.name)[0])
            if name in wheels and wheels[name] != path:
                wheels[name].unlink()
            wheels[name] = path
            log(f"gpu-bundle: {path.name}")
            pending += [(Requirement(text), tuple(wanted.get(name, ()))) for text in wheel_requirements(path)]
    return wheels


def sha256(data_or_path) -> str:
    """The sha256 of bytes or of a file's bytes."""
    digest = hashlib.sha256()
    if isinstance(data_or_path, (bytes, bytearray)):
        digest.update(data_or_path)
        return digest.hexdigest()
    with open(data_or_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_bytes(data: bytes, part_bytes: int) -> list[bytes]:
    """``data`` in consecutive parts of at most ``part_bytes`` (at least one part)."""
    if part_bytes < 1:
        raise BundleError(f"part size {part_bytes}: expected at least 1 byte")
    return [data[i : i + part_bytes] for i in range(0, len(data), part_bytes)] or [b""]


def write_bundle(wheels: list[Path], out: Path, part_bytes: int, meta: dict) -> dict:
    """The wheels as one tar in parts under ``out`` with ``bundle.json`` (written last, whole, then renamed)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(wheels, key=lambda p: p.name):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    data = buffer.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("part-*"):
        stale.unlink()
    parts = []
    for index, chunk in enumerate(split_bytes(data, part_bytes)):
        name = f"part-{index:03d}"
        (out / name).write_bytes(chunk)
        parts.append({"file": name, "bytes": len(chunk), "sha256": sha256(chunk)})
    manifest = {**meta, "tar_bytes": len(data), "tar_sha256": sha256(data), "part_bytes": part_bytes,
                "parts": parts, "wheels": [{"file": p.name, "bytes": p.stat().st_size, "sha256": sha256(p)}
                                           for p in sorted(wheels, key=lambda p: p.name)]}
    partial = out / (MANIFEST + ".part")
    partial.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(partial, out / MANIFEST)
    return manifest


def join_bundle(bundle: Path, into: Path) -> list[Path]:
    """The bundle's parts joined and checked (each part's and the tar's sha256), its wheels extracted into
    ``into`` and checked; their paths. A missing or damaged part or wheel stops it in one line."""
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{bundle / MANIFEST}: no readable bundle manifest ({exc.__class__.__name__}); "
                          "make one with scripts/gpu-bundle.sh") from None
    chunks = []
    for part in manifest["parts"]:
        path = bundle / part["file"]
        if not path.is_file():
            raise BundleError(f"the bundle lacks {part['file']} (of {len(manifest['parts'])} parts) in {bundle}; "
                              "upload it, then run again")
        chunk = path.read_bytes()
        if sha256(chunk) != part["sha256"]:
            raise BundleError(f"{path}: sha256 mismatch (damaged or from another bundle); upload it again")
        chunks.append(chunk)
    data = b"".join(chunks)
    if sha256(data) != manifest["tar_sha256"]:
        raise BundleError(f"{bundle}: the joined parts do not give the bundle's tar (sha256); upload them again")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(into, filter="data")
    paths = []
    for wheel in manifest["wheels"]:
        path = into / wheel["file"]
        if not path.is_file() or sha256(path) != wheel["sha256"]:
            raise BundleError(f"the bundle has no intact wheel {wheel['file']}; make the bundle again")
        paths.append(path)
    return paths


def unmet(requirements: list[str], site: Path) -> tuple[list[str], list[str]]:
    """(missing, conflicts) of the requirements (and of the bundled wheels' own, recursively) for this Python with
    ``site`` on its path, one line each naming what needs what. Missing packages stop an install; a version
    outside a requirement's range (an image package newer than a bundled wheel's cap) is reported and the check
    goes on: the image's packages are what they are, and most caps are caution."""
    import importlib
    import importlib.metadata as metadata

    from packaging.markers import default_environment
    from packaging.requirements import Requirement

    sys.path.insert(0, str(site))
    importlib.invalidate_caches()  # the freshly filled site is seen by importlib.metadata
    environment = default_environment()
    missing, conflicts, seen = [], [], set()
    pending = [(Requirement(text), "augforge", ()) for text in requirements]
    while pending:
        requirement, needed_by, extras = pending.pop()
        name = normalized(requirement.name)
        if (name, str(requirement.specifier)) in seen or not applies(requirement, environment, extras):
            continue
        seen.add((name, str(requirement.specifier)))
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            missing.append(f"the bundle has no wheel for {requirement.name} (required by {needed_by}), and this "
                           "Python does not have it; make the bundle again with scripts/gpu-bundle.sh")
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            conflicts.append(f"{requirement.name} {version} is here; {needed_by} asks for {requirement}")
        dist = metadata.distribution(requirement.name)
        if Path(str(dist.locate_file(""))).resolve() == site.resolve():  # a bundled wheel: check what it needs
            pending += [(Requirement(text), requirement.name, tuple(requirement.extras)) for text in dist.requires or ()]
    return missing, conflicts


def make(args) -> int:
    """``make``: resolve, download, write the parts; print their sizes and sha256s."""
    requirements = args.requires or project_requirements(args.extra)
    image = image_packages(Path(args.image)) if args.image else image_packages()
    out = Path(args.out)
    left: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        wheels = resolve(requirements, image, args.python_version, Path(tmp), args.find_links, left=left)
        meta = {"python_version": args.python_version, "platforms": PLATFORMS, "requires": requirements,
                "image": str(args.image or IMAGE.relative_to(ROOT)), "from_image": sorted(left)}
        manifest = write_bundle(list(wheels.values()), out, int(args.part_mib * (1 << 20)), meta)
    for part in manifest["parts"]:
        print(f"{out / part['file']}  {part['bytes'] / (1 << 20):6.1f} MiB  sha256 {part['sha256']}")
    print(f"gpu-bundle: {len(manifest['wheels'])} wheels, {manifest['tar_bytes'] / (1 << 20):.1f} MiB in "
          f"{len(manifest['parts'])} parts of at most {args.part_mib:g} MiB, for CPython {args.python_version}; "
          f"{out / MANIFEST}")
    return 0


def install(args) -> int:
    """``install``: join and check the parts, install the wheels into ``--target`` from them alone, check."""
    bundle, site = Path(args.bundle), Path(args.target)
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-") as tmp:
        wheels = join_bundle(bundle, Path(tmp))
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
        if wheels:
            done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-cache-dir",
                                   "--disable-pip-version-check", "--quiet", "--upgrade", "--target", str(site),
                                   *map(str, wheels)], capture_output=True, text=True)
            if done.returncode != 0:
                why = [line for line in done.stderr.splitlines() if line.strip()][-1:] or ["no reason given"]
                raise BundleError(f"pip could not install the bundle into {site}: {why[0].strip()}")
    missing, conflicts = unmet(manifest["requires"], site)
    if missing:
        raise BundleError(missing[0] + (f" ({len(missing) - 1} more)" if len(missing) > 1 else ""))
    for line in conflicts:
        print(f"gpu-bundle: warning: {line}")
    held = "every requirement holds" if not conflicts else f"every package is here, {len(conflicts)} outside a range"
    print(f"gpu-bundle: installed {len(wheels)} wheels into {site} from {bundle} alone; {held}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The two commands' options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    made = sub.add_parser("make", help="download the wheels and write the parts")
    made.add_argument("--out", required=True, help="where the parts and bundle.json go (a git-ignored folder)")
    made.add_argument("--python-version", default="3.12", help="the target CPython (default 3.12, the GPU image's)")
    made.add_argument("--part-mib", type=float, default=PART_MIB, help=f"largest part (default {PART_MIB} MiB)")
    made.add_argument("--extra", default="gpu", help="augforge's extra to add to its dependencies (default gpu)")
    made.add_argument("--requires", nargs="*", help="these requirements instead of augforge's")
    made.add_argument("--image", help="the target image's package list (default scripts/gpu-image-packages.txt)")
    made.add_argument("--find-links", help="take the wheels from this folder instead of the registries")
    made.set_defaults(func=make)
    put = sub.add_parser("install", help="join the parts and install the wheels from them alone")
    put.add_argument("--bundle", required=True, help="the folder holding bundle.json and every part")
    put.add_argument("--target", required=True, help="the folder to install into (put it on PYTHONPATH)")
    put.set_defaults(func=install)
    return parser


def main(argv=None) -> int:
    """Run one command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
