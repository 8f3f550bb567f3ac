"""The tree is what README's Code map says: imports flow one way between its folders."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = ("app.settings", "app.store", "app.services", "app.process", "app.errors", "app.logs", "app.counts",
       "app.targets", "app.cluster")
# each part and the parts it may import (besides itself); first match wins
PARTS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("media", ("supervisors.media",), ()),
    ("camera", ("supervisors.camera",), ("supervisors.events",)),
    ("engine", ("supervisors",), ("supervisors",)),
    ("policy", ("app.policy",), ("supervisors",)),
    ("db", ("app.db",), ("supervisors",)),
    ("accounts", ("app.accounts",), ("app.db", "app.policy", "supervisors")),
    ("top", TOP, (*TOP, "app.db", "app.policy", "app.accounts", "supervisors")),
    ("http", ("app.http",), (*TOP, "app.policy", "app.accounts", "supervisors")),
    ("sockets", ("app.sockets",), (*TOP, "app.policy", "app.accounts", "supervisors")),
    ("cli", ("app.cli", "app.__main__"), ("app.factory", "app.asgi", "app.http", "app.sockets", "app.policy", "app.db", "app.accounts",
                           "supervisors", *TOP)),
    ("factory", ("app.factory", "app.asgi", "app"), ("app.http", "app.sockets", "app.policy", "app.db", "app.accounts",
                                                     "supervisors", *TOP)),
]


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    """`app` names the package itself (its `__init__`); any other prefix, a folder or module."""
    return any(module == p or (p != "app" and module.startswith(p + ".")) for p in prefixes)


def part_of(module: str) -> tuple[str, tuple[str, ...]]:
    for name, members, allowed in PARTS:
        if _within(module, members):
            return name, members + allowed
    raise AssertionError(f"{module} is in no part of the Code map")


def imports(path: Path, module: str) -> set[str]:
    """Every module of ours this file imports, as absolute names."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import x`: x may be a module
    ours = {name for name in found if name.split(".")[0] in ("app", "supervisors")}
    modules = {p.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
               for p in [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("supervisors").rglob("*.py")]}
    return {name for name in ours if name in modules}


def test_imports_flow_one_way_as_the_code_map_says() -> None:
    wrong = []
    for path in sorted([*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("supervisors").rglob("*.py")]):
        relative = path.relative_to(ROOT).with_suffix("")
        module = ".".join(relative.parts[:-1] if relative.name == "__init__" else relative.parts)
        part, allowed = part_of(module)
        wrong += [f"{module} ({part}) imports {name}" for name in sorted(imports(path, module))
                  if not _within(name, allowed)]
    assert not wrong, "\n".join(wrong)


def test_every_folder_of_the_code_map_exists_and_is_described() -> None:
    code_map = ROOT.joinpath("README.md").read_text().split("## Code map")[1].split("\n## ")[0]
    folders = sorted({p.parent.relative_to(ROOT).as_posix() for p in ROOT.joinpath("app").rglob("__init__.py")}
                     | {p.parent.relative_to(ROOT).as_posix() for p in ROOT.joinpath("supervisors").rglob("__init__.py")})
    for folder in folders:
        if folder not in ("app", "supervisors"):
            assert f"`{folder}/`" in code_map, f"{folder}/ is not in README's Code map"
    for path in ROOT.joinpath("app").rglob("*.py"):
        if path.name != "__init__.py":
            assert f"`{path.stem}`" in code_map or f"`app/{path.name}`" in code_map, f"{path} is not in the Code map"
    for path in ROOT.joinpath("supervisors").rglob("*.py"):
        if path.name != "__init__.py":
            assert f"`{path.stem}`" in code_map, f"{path} is not in the Code map"
