"""The shape of ``src/renewauth``, measured: what the design promises about its structure.

Run ``python tools/structure.py`` (CI runs it and fails on a broken rule). It prints:

- import cycles between modules (imports inside functions and under ``TYPE_CHECKING`` count;
  importing a package counts as importing its ``__init__``);
- modules longer than 600 lines and classes longer than 400;
- sync/async twins: a function and its ``a…``/``async_…`` counterpart in the same scope whose
  bodies, with ``await``/``async``, the name prefixes and docstrings removed and one statement
  per line, share runs of 5 or more identical consecutive lines. A pair whose two bodies are
  each 12 statements or fewer is a thin driver and does not count. At most 3 such pairs and 40
  such lines;
- reads of another module's private attributes: ``x._name`` (``x`` not ``self``/``cls``) where
  ``_name`` is defined by a class of another module and by none of this one.

``testing/`` is left out: it is the test kit, not the library.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "renewauth"
LEFT_OUT = ("renewauth.testing",)

MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 400
TWIN_RUN = 5
THIN_DRIVER = 12
MAX_TWIN_PAIRS = 3
MAX_TWIN_LINES = 40


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    is_package: bool
    imports: set[str] = field(default_factory=set)


def _modules() -> dict[str, Module]:
    found: dict[str, Module] = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        if name.startswith(LEFT_OUT):
            continue
        text = path.read_text(encoding="utf-8")
        found[name] = Module(
            name, path, ast.parse(text, str(path)), len(text.splitlines()), is_package
        )
    return found


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _link_imports(modules: dict[str, Module]) -> None:
    def known(name: str) -> str | None:
        while name:
            if name in modules:
                return name
            name = name.rpartition(".")[0]
        return None

    for module in modules.values():
        for node in ast.walk(module.tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if not target.startswith(PACKAGE):
                    continue
                hit = known(target)
                if hit and hit != module.name:
                    module.imports.add(hit)


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for other in sorted(modules[name].imports):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in on_stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == name:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for name in sorted(modules):
        if name not in index:
            visit(name)
    return cycles


def long_parts(modules: dict[str, Module]) -> list[str]:
    found = []
    for module in modules.values():
        if module.lines > MAX_MODULE_LINES:
            found.append(f"module {module.name}: {module.lines} lines (> {MAX_MODULE_LINES})")
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_CLASS_LINES:
                    found.append(
                        f"class {module.name}.{node.name}: {size} lines (> {MAX_CLASS_LINES})"
                    )
    return found


# --- twins -------------------------------------------------------------------------------

Function = ast.FunctionDef | ast.AsyncFunctionDef


def _stem(name: str) -> tuple[str, str] | None:
    """The name a function's async twin shares with it, and the async prefix it drops."""
    bare = name.lstrip("_")
    under = name[: len(name) - len(bare)]
    if bare.startswith("async_"):
        return under + bare[len("async_") :], "async"
    if bare.startswith("sync_"):
        return under + bare[len("sync_") :], "sync"
    if bare.startswith("a") and len(bare) > 1:
        return under + bare[1:], "async"
    return None


def _counterparts(scope: list[ast.stmt]) -> Iterator[tuple[Function, Function]]:
    functions = {n.name: n for n in scope if isinstance(n, Function)}
    pairs: set[tuple[str, str]] = set()
    for name, node in functions.items():
        stem = _stem(name)
        if stem is None:
            continue
        base, kind = stem
        candidates = [base] if kind == "async" else []
        bare = base.lstrip("_")
        under = base[: len(base) - len(bare)]
        candidates.append(under + "sync_" + bare)
        for other in candidates:
            if other in functions and other != name and (other, name) not in pairs:
                pairs.add((name, other))
                yield functions[other], node


class _Plain(ast.NodeTransformer):
    """Drops ``await`` and async-ness, and the ``a``/``async_`` prefixes of names."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def visit_Await(self, node: ast.Await) -> ast.AST:
        return self.visit(node.value)

    def _rename(self, name: str) -> str:
        stem = _stem(name)
        if stem and stem[1] in ("async", "sync") and name not in self.names:
            return name
        if stem and name in self.names:
            return stem[0]
        return name

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = self._rename(node.id)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        self.generic_visit(node)
        node.attr = self._rename(node.attr)
        return node

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        self.generic_visit(node)
        return ast.copy_location(ast.With(items=node.items, body=node.body), node)

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        self.generic_visit(node)
        loop = ast.For(target=node.target, iter=node.iter, body=node.body, orelse=node.orelse)
        return ast.copy_location(loop, node)


def _body(node: Function) -> list[ast.stmt]:
    body = list(node.body)
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        return body[1:] if isinstance(first.value.value, str) else body
    return body


def _statement_lines(statements: list[ast.stmt]) -> list[str]:
    """One line per statement; a compound statement gives its header, then its blocks."""
    lines: list[str] = []
    for statement in statements:
        blocks = [
            (label, getattr(statement, label))
            for label in ("body", "orelse", "finalbody")
            if isinstance(getattr(statement, label, None), list)
        ]
        handlers = getattr(statement, "handlers", None) or []
        cases = getattr(statement, "cases", None) or []
        if not blocks and not handlers and not cases:
            lines.append(ast.unparse(statement))
            continue
        head = ast.copy_location(statement.__class__(**dict(ast.iter_fields(statement))), statement)
        for label, _ in blocks:
            setattr(head, label, [ast.Pass()])
        if handlers:
            head.handlers = []  # type: ignore[attr-defined]
        if cases:
            head.cases = []  # type: ignore[attr-defined]
        lines.append(ast.unparse(head).splitlines()[0])
        for label, block in blocks:
            if label != "body" and block:
                lines.append(f"{label}:")
            lines.extend(_statement_lines(block))
        for handler in handlers:
            lines.append(f"except {ast.unparse(handler.type) if handler.type else ''}")
            lines.extend(_statement_lines(handler.body))
        for case in cases:
            lines.append(f"case {ast.unparse(case.pattern)}")
            lines.extend(_statement_lines(case.body))
    return lines


def _count_statements(statements: list[ast.stmt]) -> int:
    return sum(isinstance(n, ast.stmt) for s in statements for n in ast.walk(s))


def _shared_runs(first: list[str], second: list[str]) -> int:
    """Lines of ``first`` in runs of TWIN_RUN or more lines that also stand in ``second``."""
    shared = [False] * len(first)
    for i in range(len(first)):
        for j in range(len(second)):
            k = 0
            while i + k < len(first) and j + k < len(second) and first[i + k] == second[j + k]:
                k += 1
            if k >= TWIN_RUN:
                for m in range(i, i + k):
                    shared[m] = True
    return sum(shared)


def _scopes(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    yield tree.body  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.body


def twins(modules: dict[str, Module]) -> list[tuple[str, int]]:
    found = []
    for module in modules.values():
        names = {
            n.name
            for n in ast.walk(module.tree)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for scope in _scopes(module.tree):
            for sync, asynchronous in _counterparts(scope):
                bodies = [_body(sync), _body(asynchronous)]
                if all(_count_statements(b) <= THIN_DRIVER for b in bodies):
                    continue
                plain = [
                    _statement_lines(
                        [_Plain(names).visit(ast.parse(ast.unparse(s)).body[0]) for s in b]
                    )
                    for b in bodies
                ]
                shared = _shared_runs(plain[0], plain[1])
                if shared:
                    found.append((f"{module.name}: {sync.name} / {asynchronous.name}", shared))
    return found


# --- private attributes ------------------------------------------------------------------


def _class_attributes(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for node in ast.walk(cls):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(node.target.id)
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        for node in cls.body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name) and target.id == "__slots__":
                        value = node.value
                        if isinstance(value, ast.Tuple | ast.List):
                            names.update(
                                e.value
                                for e in value.elts
                                if isinstance(e, ast.Constant) and isinstance(e.value, str)
                            )
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def private_reads(modules: dict[str, Module]) -> list[str]:
    owners: dict[str, set[str]] = {}
    own = {}
    for module in modules.values():
        own[module.name] = _class_attributes(module.tree)
        for name in own[module.name]:
            owners.setdefault(name, set()).add(module.name)
    found = []
    for module in modules.values():
        for node in ast.walk(module.tree):
            if not isinstance(node, ast.Attribute) or node.attr not in owners:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if node.attr in own[module.name]:
                continue
            others = ", ".join(sorted(owners[node.attr]))
            found.append(f"{module.name}:{node.lineno}: {ast.unparse(node)} (private to {others})")
    return found


def main() -> int:
    modules = _modules()
    _link_imports(modules)
    broken = False

    cycles = import_cycles(modules)
    print(f"import cycles: {len(cycles)}")
    for cycle in cycles:
        print("  " + " <-> ".join(cycle))
    broken |= bool(cycles)

    long = long_parts(modules)
    print(f"modules over {MAX_MODULE_LINES} lines, classes over {MAX_CLASS_LINES}: {len(long)}")
    for line in long:
        print("  " + line)
    broken |= bool(long)

    pairs = twins(modules)
    lines = sum(n for _, n in pairs)
    print(
        f"sync/async twins sharing runs of {TWIN_RUN}+ lines: {len(pairs)} pairs, {lines} lines"
        f" (at most {MAX_TWIN_PAIRS} pairs and {MAX_TWIN_LINES} lines)"
    )
    for name, shared in sorted(pairs, key=lambda p: -p[1]):
        print(f"  {shared:4d}  {name}")
    broken |= len(pairs) > MAX_TWIN_PAIRS or lines > MAX_TWIN_LINES

    reads = private_reads(modules)
    print(f"reads of another module's private attributes: {len(reads)}")
    for line in reads:
        print("  " + line)
    broken |= bool(reads)

    largest = sorted(modules.values(), key=lambda m: -m.lines)[:5]
    print("largest modules: " + ", ".join(f"{m.name} {m.lines}" for m in largest))
    print("structure: " + ("BROKEN" if broken else "ok"))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
