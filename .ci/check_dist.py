"""Check a built sdist and wheel the way a release would be checked.

    python .ci/check_dist.py DIST_DIR

DIST_DIR holds exactly one ``renewauth-*.tar.gz`` and one ``renewauth-*.whl`` (from
``python -m build``, which builds the wheel from the sdist, so a file the sdist forgets is
missing from the wheel too). The wheel must hold every module of ``src/renewauth`` and
``py.typed``, declare the pytest plugin and the ``renewauth`` command, and hold no test of
ours; the sdist must hold the licence, the README and the sources. Exits 1 naming each fault.
"""

from __future__ import annotations

import configparser
import pathlib
import sys
import tarfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "renewauth"


def _one(dist: pathlib.Path, pattern: str) -> pathlib.Path:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        sys.exit(f"check_dist: expected one {pattern} in {dist}, found {[p.name for p in found]}")
    return found[0]


def check_wheel(wheel: pathlib.Path) -> list[str]:
    """The faults of one wheel, as sentences; empty when it is fit to publish."""
    faults: list[str] = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = {name.split("/", 1)[0] for name in names if ".dist-info/" in name}
        entry_points_text = ""
        for info in dist_info:
            if f"{info}/entry_points.txt" in names:
                entry_points_text = archive.read(f"{info}/entry_points.txt").decode()
    if "renewauth/py.typed" not in names:
        faults.append("the wheel lacks renewauth/py.typed: type checkers would ignore its hints")
    expected = {
        "renewauth/" + path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }
    missing = sorted(expected - names)
    if missing:
        faults.append(f"the wheel lacks modules of src/renewauth: {missing}")
    tests = sorted(
        name
        for name in names
        if name.startswith(("tests/", "test/"))
        or "/tests/" in name
        or pathlib.PurePosixPath(name).name.startswith("test_")
        or pathlib.PurePosixPath(name).name == "conftest.py"
    )
    if tests:
        faults.append(f"the wheel holds tests, which belong in the sdist only: {tests}")
    strays = sorted(
        name
        for name in names
        if not name.startswith("renewauth/") and name.split("/", 1)[0] not in dist_info
    )
    if strays:
        faults.append(f"the wheel installs files outside renewauth/: {strays}")
    entry_points = configparser.ConfigParser()
    entry_points.read_string(entry_points_text)
    plugin = entry_points.get("pytest11", "renewauth", fallback=None)
    if plugin != "renewauth.testing.pytest_plugin":
        faults.append(
            "the wheel does not declare the pytest plugin "
            f"(pytest11: renewauth = renewauth.testing.pytest_plugin; found {plugin!r})"
        )
    command = entry_points.get("console_scripts", "renewauth", fallback=None)
    if command != "renewauth.cli:main":
        faults.append(f"the wheel does not declare the renewauth command (found {command!r})")
    return faults


def check_sdist(sdist: pathlib.Path) -> list[str]:
    """The faults of one sdist, as sentences; empty when it is fit to publish."""
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    required = ["LICENSE", "README.md", "pyproject.toml", "src/renewauth/__init__.py"]
    required += ["src/renewauth/py.typed", "tests/conftest.py"]
    return [f"the sdist lacks {name}" for name in required if name not in names]


def main() -> int:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    dist = pathlib.Path(sys.argv[1])
    wheel = _one(dist, "renewauth-*.whl")
    sdist = _one(dist, "renewauth-*.tar.gz")
    faults = check_wheel(wheel) + check_sdist(sdist)
    for fault in faults:
        print(f"check_dist: {fault}", file=sys.stderr)
    if faults:
        return 1
    print(f"check_dist: {wheel.name} and {sdist.name} hold what a release needs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
