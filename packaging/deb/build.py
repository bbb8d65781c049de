"""Build Edgeward's Debian packages, edgeward-edge and edgeward-hub, into dist/.

    python packaging/deb/build.py [--arch amd64] [--arch arm64] [--version 0.1.0-1]

Each package carries our own modules (``/usr/lib/<package>/app``) and the libraries
they need, bundled from PyPI's wheels for the package's architecture, once per
Python that Debian and its derivatives ship (``/usr/lib/<package>/python3.X``): the
launchers in ``/usr/bin`` put the right one first on ``sys.path``. Why wheels and not
Debian's python3-* packages: docs/packaging.md, "Bundled libraries". The files that
are the same for every Python are stored once (hard links in the archive).

Needs dpkg-deb and pip (which downloads the wheels, or takes them from its cache).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from manpage import Section, render

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

#: The Pythons the packages run on: Debian 12 (3.11), Ubuntu 24.04 (3.12), Debian 13 (3.13).
PYTHONS = ("3.11", "3.12", "3.13")
#: Debian architecture -> the machine name in manylinux wheel tags.
ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64"}
#: The oldest glibc among the releases above is Debian 12's, 2.36.
GLIBC_MINOR = 36
#: Requirements of pyproject.toml only the hub uses: the edge package leaves them out.
HUB_ONLY = {"sqlalchemy", "fastapi", "uvicorn", "psycopg", "prometheus_client"}
#: Requirements Debian 12 and 13 both ship at a version we support, taken from Debian
#: (its libyaml gets Debian's security updates; a bundled one would not).
FROM_DEBIAN = {"pyyaml": "python3-yaml (>= 6.0)"}
#: The strip that knows each architecture's object files (binutils-<triplet>).
STRIP = {"amd64": "x86_64-linux-gnu-strip", "arm64": "aarch64-linux-gnu-strip"}
MAINTAINER = "Edgeward developers <developers@edgeward.dev>"
HOMEPAGE = "https://github.com/edgeward/edgeward"


@dataclass(frozen=True)
class Package:
    name: str
    summary: str
    description: str
    modules: tuple[str, ...]
    daemon: str
    extra_depends: tuple[str, ...] = ()
    recommends: tuple[str, ...] = ()
    #: (file in this checkout, path in the package): configuration dpkg keeps when changed
    conffiles: tuple[tuple[str, str], ...] = ()
    #: (requirement in pyproject.toml, what the package bundles instead)
    replace: dict[str, str] = field(default_factory=dict)


EDGE = Package(
    name="edgeward-edge",
    summary="Edgeward edge daemon (edgecore) and CLI",
    description="""\
edgecore keeps a local cache of the desired state an Edgeward hub holds for
this gateway, syncs with the hub over a mutually authenticated websocket,
keeps serving its devices through outages, and bridges field devices through
MQTT device twins (KubeEdge's mapper protocol).
.
This package holds edgecore, its systemd unit, the edgeward command line tool
(sudo edgeward join makes this gateway a node of a hub and starts the service)
and a Mosquitto drop-in that keeps the broker on the loopback interface.""",
    modules=("edgeward", "edgecore", "devicetwin"),
    daemon="edgecore",
    recommends=("mosquitto",),
    conffiles=(("packaging/mosquitto/edgeward.conf", "etc/mosquitto/conf.d/edgeward.conf"),),
)

HUB = Package(
    name="edgeward-hub",
    summary="Edgeward hub (cloudhub) and CLI",
    description="""\
cloudhub holds an Edgeward fleet's desired state in SQLite or PostgreSQL,
serves its REST API over HTTPS with bearer tokens, and serves the edge
nodes' mutually authenticated websocket endpoint.
.
This package holds cloudhub, its systemd unit and the edgeward command line
tool; cloudhub init creates the hub's certificate authority.""",
    modules=("edgeward", "edgecore", "devicetwin", "cloudhub"),
    daemon="cloudhub",
    # psycopg without its binary wheel loads Debian's libpq, which Debian keeps patched
    extra_depends=("libpq5",),
    conffiles=(("<generated>", "etc/edgeward/cloudhub.yaml"),),
    replace={"psycopg[binary]": "psycopg"},
)

PACKAGES = (EDGE, HUB)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="build.py",
        description="Build the edgeward-edge and edgeward-hub .deb files into dist/.",
    )
    parser.add_argument(
        "--arch",
        action="append",
        choices=sorted(ARCHITECTURES),
        help="Debian architecture; repeat for several (default: amd64 and arm64)",
    )
    parser.add_argument(
        "--version",
        help="the Debian version, e.g. 0.1.1-1 (default: edgeward.__version__ with -1); its "
        "upstream part is what the programs print as their version",
    )
    parser.add_argument("--package", action="append", choices=[p.name for p in PACKAGES])
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="default: dist/")
    args = parser.parse_args(argv)
    version = args.version or f"{source_version()}-1"
    if not re.fullmatch(r"[0-9][A-Za-z0-9.+~]*-[A-Za-z0-9.+~]+", version):
        parser.error(f"--version {version!r} is not a Debian version like 0.1.0-1")
    if shutil.which("dpkg-deb") is None:
        print("build.py: dpkg-deb is missing (apt-get install dpkg)", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for arch in args.arch or sorted(ARCHITECTURES):
        for package in PACKAGES:
            if args.package and package.name not in args.package:
                continue
            started = time.monotonic()
            deb = build(package, arch, version, args.out)
            size = deb.stat().st_size / 2**20
            print(
                f"built {deb.relative_to(Path.cwd()) if deb.is_relative_to(Path.cwd()) else deb}"
                f" ({size:.1f} MiB, {time.monotonic() - started:.0f} s)",
                flush=True,
            )
    return 0


def source_version() -> str:
    text = (ROOT / "edgeward" / "__init__.py").read_text()
    found = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if found is None:
        raise SystemExit("build.py: edgeward/__init__.py has no __version__ line")
    return found.group(1)


def requirements(package: Package) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = []
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()
        if (package is EDGE and name in HUB_ONLY) or name in FROM_DEBIAN:
            continue
        for old, new in package.replace.items():
            requirement = requirement.replace(old, new)
        wanted.append(requirement)
    return wanted


def build(package: Package, arch: str, version: str, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix=f"{package.name}-") as tmp:
        root = Path(tmp) / "root"
        lib = root / "usr" / "lib" / package.name
        copy_modules(package, lib / "app", version.rsplit("-", 1)[0])
        for python in PYTHONS:
            bundle(package, arch, python, lib / f"python{python}")
        share_common(lib)
        strip(lib, arch)
        drop_shebangs(lib)
        write_launchers(package, root)
        write_unit(package, root)
        conffiles = write_conffiles(package, root)
        write_docs(package, root, version)
        write_manpage(package, root, version)
        control = root / "DEBIAN"
        control.mkdir()
        write_maintainer_scripts(package, control)
        if conffiles:
            (control / "conffiles").write_text("".join(f"/{path}\n" for path in conffiles))
        write_md5sums(root, control)
        write_control(package, arch, version, root, control)
        normalise(root)
        deb = out / f"{package.name}_{version}_{arch}.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "SOURCE_DATE_EPOCH": str(source_date())},
        )
        return deb


def copy_modules(package: Package, app: Path, upstream: str) -> None:
    for module in package.modules:
        shutil.copytree(
            ROOT / module,
            app / module,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"),
        )
    init = app / "edgeward" / "__init__.py"
    text, count = re.subn(
        r'^__version__ = "[^"]+"$', f'__version__ = "{upstream}"', init.read_text(), flags=re.M
    )
    if count != 1:
        raise SystemExit("build.py: edgeward/__init__.py has no __version__ line")
    init.write_text(text)


def bundle(package: Package, arch: str, python: str, target: Path) -> None:
    """The package's requirements as pip installs them for that Python and architecture."""
    machine = ARCHITECTURES[arch]
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC_MINOR + 1)]
    platforms += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "--python-version",
        python,
        "--implementation",
        "cp",
        "--only-binary=:all:",
        "--no-compile",
        "--constraint",
        str(HERE / "constraints.txt"),
    ]
    for platform in platforms:
        command += ["--platform", platform]
    result = subprocess.run(
        [*command, *requirements(package)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
        raise SystemExit(
            f"build.py: pip could not bundle {package.name}'s libraries for Python {python} on "
            f"{arch}: {errors[0] if errors else result.stderr.strip()[-300:]}"
        )
    # console scripts point at the build machine's interpreter; the packages have their own
    shutil.rmtree(target / "bin", ignore_errors=True)


def share_common(lib: Path) -> None:
    """Move what every Python's bundle holds alike (pure Python, abi3) to ``common``."""
    common = lib / "common"
    common.mkdir()
    first, *others = (lib / f"python{python}" for python in PYTHONS)
    for entry in sorted(first.iterdir()):
        digest = tree_digest(entry)
        if all(tree_digest(other / entry.name) == digest for other in others):
            entry.rename(common / entry.name)
            for other in others:
                remove(other / entry.name)


def tree_digest(path: Path) -> str | None:
    if not path.exists():
        return None
    digest = hashlib.sha256()
    for item in sorted([path, *path.rglob("*")] if path.is_dir() else [path]):
        digest.update(item.relative_to(path).as_posix().encode() + b"\0")
        if item.is_file():
            digest.update(item.read_bytes())
    return digest.hexdigest()


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def strip(lib: Path, arch: str) -> None:
    """Drop the wheels' debug symbols (Debian ships stripped objects; so do we)."""
    tool = shutil.which(STRIP[arch])
    if tool is None:
        raise SystemExit(
            f"build.py: {STRIP[arch]} is missing: apt-get install binutils-"
            f"{STRIP[arch].removesuffix('-strip')}"
        )
    objects = [str(path) for path in lib.rglob("*.so*") if path.is_file()]
    if objects:
        subprocess.run(
            [
                tool,
                "--strip-unneeded",
                "--remove-section=.comment",
                "--remove-section=.note",
                *objects,
            ],
            check=True,
        )


LAUNCHER = '''\
#!/usr/bin/python3 -I
"""{command}, from the {package} package: our modules and the libraries bundled for
this Python first on the path (see /usr/share/doc/{package}/README.Debian)."""
import sys

lib = "/usr/lib/{package}"
bundled = f"{{lib}}/python{{sys.version_info[0]}}.{{sys.version_info[1]}}"
try:
    open(f"{{bundled}}/.bundled").close()
except OSError:
    sys.exit(
        f"{command}: {package} bundles its libraries for Python {pythons}, "
        f"not {{sys.version.split()[0]}}: install the {package} build for this release"
    )
sys.path[:0] = [f"{{lib}}/app", bundled, f"{{lib}}/common"]
from {module} import main  # noqa: E402

sys.exit(main())
'''


def write_launchers(package: Package, root: Path) -> None:
    lib = root / "usr" / "lib" / package.name
    commands = {package.daemon: f"{package.daemon}.main", "edgeward": "edgeward.cli.main"}
    for python in PYTHONS:
        (lib / f"python{python}" / ".bundled").write_text("")
    for command, module in commands.items():
        # edgeward is in both packages: /usr/bin/edgeward is an alternative (postinst)
        where = lib / "bin" if command == "edgeward" else root / "usr" / "bin"
        where.mkdir(parents=True, exist_ok=True)
        script = where / command
        script.write_text(
            LAUNCHER.format(
                command=command,
                package=package.name,
                module=module,
                pythons=", ".join(PYTHONS),
            )
        )
        script.chmod(0o755)


def write_unit(package: Package, root: Path) -> None:
    units = root / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy(ROOT / "packaging" / "systemd" / f"{package.daemon}.service", units)


def write_conffiles(package: Package, root: Path) -> list[str]:
    for source, path in package.conffiles:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if source == "<generated>":
            target.write_text(default_config(package))
        else:
            shutil.copy(ROOT / source, target)
    return [path for _source, path in package.conffiles]


def default_config(package: Package) -> str:
    """The daemon's own commented config with every default (--print-default-config)."""
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from {package.daemon}.main import main; main()",
            "--print-default-config",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return (
        f"# {package.daemon}'s configuration, read by {package.daemon}.service. Every setting "
        "below is\n# commented out at its default: uncomment and change what you need, then\n"
        f"# systemctl restart {package.daemon}. Upgrades keep a changed file.\n"
        + "".join(
            line if line.startswith("#") or not line.strip() else f"# {line}"
            for line in result.stdout.splitlines(keepends=True)
        )
    )


def write_docs(package: Package, root: Path, version: str) -> None:
    docs = root / "usr" / "share" / "doc" / package.name
    docs.mkdir(parents=True)
    shutil.copy(HERE / "copyright", docs / "copyright")
    shutil.copy(HERE / "README.Debian", docs / "README.Debian")
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(source_date()))
    changelog = (
        f"{package.name} ({version}) unstable; urgency=medium\n\n"
        f"  * Built from the Edgeward source tree, version {version.rsplit('-', 1)[0]}.\n"
        "    The project's history is its git log.\n\n"
        f" -- {MAINTAINER}  {date}\n"
    )
    gzipped(docs / "changelog.Debian.gz", changelog.encode())
    overrides = root / "usr" / "share" / "lintian" / "overrides"
    overrides.mkdir(parents=True)
    (overrides / package.name).write_text(
        "# Built from our own tree for our users, not uploaded to Debian: no ITP bug to close.\n"
        f"{package.name}: initial-upload-closes-no-bugs\n"
    )


#: What each daemon's manual page says beyond its --help: (summary, files, more sections).
MANUAL = {
    "edgecore": (
        "the Edgeward edge daemon",
        (
            ("/etc/edgeward/edgecore.yaml", "the configuration, written by edgeward join; "
             "edgecore --print-default-config shows every setting with its default"),
            ("/var/lib/edgeward/edge", "the cache and outbox (edge.db) and the node's key "
             "and certificate (pki/)"),
            ("edgecore.service", "the systemd unit; journalctl -u edgecore has its log"),
        ),
    ),
    "cloudhub": (
        "the Edgeward hub",
        (
            ("/etc/edgeward/cloudhub.yaml", "the configuration (a conffile), every setting "
             "commented out at its default"),
            ("/var/lib/edgeward/hub", "the database (hub.db, unless a PostgreSQL URL is "
             "set), the CA and server certificate (pki/), admin.yaml and audit.log"),
            ("cloudhub.service", "the systemd unit; journalctl -u cloudhub has its log"),
        ),
    ),
}  # fmt: skip


def write_manpage(package: Package, root: Path, version: str) -> None:
    """The daemon's manual page, in section 8, from its command line (manpage.py)."""
    daemon = package.daemon
    summary, files = MANUAL[daemon]
    extra = []
    if daemon == "cloudhub":
        init = importlib.import_module("cloudhub.init").build_parser()
        extra.append(Section("cloudhub init", (init.description or "",), parser=init))
    extra += [
        Section("Files", entries=files),
        Section(
            "See also",
            (
                "edgeward --help: the command line tool, in this package too. "
                f"/usr/share/doc/{package.name}/README.Debian: how the package is laid out "
                "and how a gateway joins a hub.",
            ),
        ),
    ]
    page = render(
        importlib.import_module(f"{daemon}.main").build_parser(),
        name=daemon,
        section=8,
        summary=summary,
        version=version.rsplit("-", 1)[0],
        date=time.strftime("%Y-%m-%d", time.gmtime(source_date())),
        extra=extra,
    )
    man = root / "usr" / "share" / "man" / "man8"
    man.mkdir(parents=True)
    gzipped(man / f"{daemon}.8.gz", page.encode())


def gzipped(path: Path, data: bytes) -> None:
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as out,
    ):
        out.write(data)


def write_maintainer_scripts(package: Package, control: Path) -> None:
    for script in ("postinst", "prerm", "postrm"):
        source = HERE / package.name / script
        if source.exists():
            shutil.copy(source, control / script)
            (control / script).chmod(0o755)


def write_md5sums(root: Path, control: Path) -> None:
    lines = []
    for path in sorted(files(root)):
        relative = path.relative_to(root).as_posix()
        if relative.startswith("DEBIAN/") or relative.startswith("etc/"):
            continue
        lines.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {relative}\n")
    (control / "md5sums").write_text("".join(lines))


def write_control(package: Package, arch: str, version: str, root: Path, control: Path) -> None:
    size_kib = sum(
        (path.stat().st_size + 1023) // 1024 for path in files(root) if path.stat().st_nlink == 1
    )
    # hard-linked files count once
    inodes = {
        path.stat().st_ino: path.stat().st_size for path in files(root) if path.stat().st_nlink > 1
    }
    size_kib += sum((size + 1023) // 1024 for size in inodes.values())
    low, high = PYTHONS[0], PYTHONS[-1]
    next_minor = f"{high.split('.')[0]}.{int(high.split('.')[1]) + 1}"
    depends = [
        f"python3 (>= {low})",
        f"python3 (<< {next_minor})",
        f"libc6 (>= 2.{GLIBC_MINOR})",
        "adduser",
        "init-system-helpers (>= 1.54~)",
        *FROM_DEBIAN.values(),
        *package.extra_depends,
    ]
    fields = {
        "Package": package.name,
        "Version": version,
        "Architecture": arch,
        "Maintainer": MAINTAINER,
        "Installed-Size": str(size_kib),
        "Depends": ", ".join(depends),
        "Recommends": ", ".join(package.recommends),
        "Section": "net",
        "Priority": "optional",
        "Homepage": HOMEPAGE,
    }
    text = "".join(f"{key}: {value}\n" for key, value in fields.items() if value)
    body = "\n".join(f" {line}" if line else " ." for line in package.description.splitlines())
    (control / "control").write_text(f"{text}Description: {package.summary}\n{body}\n")


def drop_shebangs(lib: Path) -> None:
    """Blank the ``#!`` line of bundled modules (prometheus_client has a few): they are not
    executable here, and lintian takes the line for a script's interpreter. The line stays,
    empty, so tracebacks keep their line numbers."""
    for path in lib.rglob("*.py"):
        if "bin" in path.relative_to(lib).parts or path.is_symlink():
            continue
        with path.open("rb") as f:
            if f.read(2) != b"#!":
                continue
        data = path.read_bytes()
        end = data.find(b"\n")
        path.write_bytes(data[end:] if end >= 0 else b"")


def normalise(root: Path) -> None:
    """Modes dpkg and lintian expect, and one timestamp, so two builds are the same."""
    stamp = source_date()
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        elif path.parent.name == "DEBIAN":
            path.chmod(0o755 if path.name in {"postinst", "prerm", "postrm"} else 0o644)
        else:
            executable = path.parent.name == "bin" and "/usr/" in path.as_posix()
            path.chmod(0o755 if executable else 0o644)
        os.utime(path, (stamp, stamp), follow_symlinks=False)


def files(root: Path) -> Iterator[Path]:
    return (path for path in root.rglob("*") if path.is_file() and not path.is_symlink())


def source_date() -> int:
    """The time of the checkout's last commit (reproducible builds), else now."""
    if "SOURCE_DATE_EPOCH" in os.environ:
        return int(os.environ["SOURCE_DATE_EPOCH"])
    result = subprocess.run(
        ["git", "-C", str(ROOT), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (
        int(result.stdout.strip())
        if result.returncode == 0 and result.stdout.strip()
        else int(time.time())
    )


if __name__ == "__main__":
    sys.exit(main())
