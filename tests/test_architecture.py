"""The layout's rules, checked on the source itself (AST only, nothing imported).

- A page (`pages/X.py`) imports only `cockpit.ui` and its own read model
  `cockpit.X_views`; `app.py` also the sidebar's (`cockpit.status_views`), the
  password and autostart. No page imports the engine or the store.
- SQL lives in the store and the cockpit's read models (`store/`, `cockpit/`):
  any other module that runs a statement or carries the text of one fails here.
- No class is longer than 250 lines and no function longer than 60 (docstring
  included). Those still over are listed in SIZE_DEBT, which only shrinks: an
  entry back within the limit must be removed.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A page imports the cockpit's shared helpers (`cockpit.ui`) and its own read model,
# `cockpit.<page>_views`, nothing else of the project: not another page's read model,
# not the store, and nothing of the engine (settings and commands come through ui).
# The entry point draws the sidebar and gates access: its read model is the status.
PAGE_SHARED = frozenset({"cockpit.ui"})
APP_IMPORTS = frozenset({"cockpit.auth", "cockpit.autostart", "cockpit.status_views"})

# Packages allowed to hold SQL: the store and the cockpit's read models.
SQL_HOMES = ("store", "cockpit")

# The longest a class and a function may be, in source lines (docstring included).
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60

# Classes and functions still over the limit, by qualified name (none today). Shrink
# this list; never grow it.
SIZE_DEBT: frozenset[str] = frozenset()

# SQL is written in capitals here; a lower-case "with ..." is prose.
SQL_TEXT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|PRAGMA)\s|^\s*WITH\s+\w+\s+AS\b"
)
SQL_CALLS = frozenset({"execute", "executemany", "executescript"})
# The project's own packages: every top-level folder with an __init__.py but the suite.
PACKAGES = tuple(
    sorted(p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "tests")
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _parsed() -> tuple[tuple[str, ast.Module], ...]:
    """Every module parsed once for the whole file: parsing the tree is the slow part."""
    paths = [ROOT / "app.py", *sorted(p for d in PACKAGES for p in (ROOT / d).rglob("*.py"))]
    return tuple(
        (module_name(path), ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for path in paths
    )


def source_modules() -> Iterator[tuple[str, ast.Module]]:
    yield from _parsed()


def imported_modules(tree: ast.Module) -> set[str]:
    """Every project module the code imports; `from pkg import mod` counts as pkg.mod."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                is_module = (ROOT / submodule.replace(".", "/")).with_suffix(".py").is_file()
                found.add(submodule if is_module else node.module)
    return {m for m in found if package(m) in PACKAGES}


def holds_sql(tree: ast.Module) -> bool:
    """True if the code runs a statement or carries the text of one."""
    return any(
        (isinstance(node, ast.Call) and getattr(node.func, "attr", None) in SQL_CALLS)
        or (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and SQL_TEXT.match(node.value) is not None
        )
        for node in ast.walk(tree)
    )


def definition_sizes(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
    """(qualified name, lines, limit) of every class and function, nested ones too."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{child.name}"
            lines = (child.end_lineno or child.lineno) - child.lineno + 1
            limit = MAX_CLASS_LINES if isinstance(child, ast.ClassDef) else MAX_FUNCTION_LINES
            yield name, lines, limit
            yield from definition_sizes(child, name)
        else:
            yield from definition_sizes(child, prefix)


def oversized(module: str, tree: ast.Module) -> list[str]:
    return [name for name, lines, limit in definition_sizes(tree, module) if lines > limit]


def package(module: str) -> str:
    return module.partition(".")[0]


def page_may_import(page: str, module: str) -> bool:
    if module in PAGE_SHARED:
        return True
    if page == "app":
        return module in APP_IMPORTS
    return module == f"cockpit.{page.rpartition('.')[2]}_views"


def is_page(module: str) -> bool:
    return module == "app" or package(module) == "pages"


def sql_allowed(module: str) -> bool:
    return package(module) in SQL_HOMES


def test_pages_import_only_read_models_commands_and_settings() -> None:
    breaches = [
        f"{name} imports {imported}"
        for name, tree in source_modules()
        if is_page(name)
        for imported in sorted(imported_modules(tree))
        if not page_may_import(name, imported)
    ]
    assert breaches == []


def test_sql_only_in_the_store_and_the_read_models() -> None:
    breaches = [
        name for name, tree in source_modules() if holds_sql(tree) and not sql_allowed(name)
    ]
    assert breaches == []


def test_a_page_importing_the_oms_or_another_pages_read_model_breaks_the_rule() -> None:
    tree = ast.parse(
        "from engine.execution.oms import Oms\nfrom engine.config import Settings\n"
        "from cockpit import overview_views, ui\nfrom cockpit.orders_views import orders\n"
        "from store.db import reader\n"
    )
    refused = [
        m for m in sorted(imported_modules(tree)) if not page_may_import("pages.overview", m)
    ]
    assert refused == ["cockpit.orders_views", "engine.config", "engine.execution.oms", "store.db"]


def test_every_page_with_data_has_its_own_read_model() -> None:
    pages = [m for m, _ in source_modules() if package(m) == "pages" and m != "pages"]
    models = {m for m, _ in source_modules() if m.startswith("cockpit.") and m.endswith("_views")}
    orphans = sorted(
        m
        for m in models - {"cockpit.status_views"}
        if f"pages.{m.removeprefix('cockpit.').removesuffix('_views')}" not in pages
    )
    assert orphans == [], "a read model no page owns"


def test_sql_is_seen_in_a_call_and_in_a_query_text() -> None:
    assert holds_sql(ast.parse("conn.execute(q)"))
    assert holds_sql(ast.parse('Q = """\n  SELECT id FROM orders"""'))
    assert not holds_sql(ast.parse('label = "Selected orders"'))


def test_the_engine_and_the_store_never_import_the_cockpit() -> None:
    breaches = [
        f"{name} imports {imported}"
        for name, tree in source_modules()
        if package(name) in ("engine", "store")
        for imported in sorted(imported_modules(tree))
        if package(imported) == "cockpit"
    ]
    assert breaches == []


def test_the_checkout_tracks_no_virtualenv_and_no_local_data() -> None:
    # A worktree's .venv is a symlink to the shared one: tracked, a checkout of main
    # would replace the real environment with a link to itself.
    tracked = subprocess.run(
        ["git", "ls-files", "--", ".venv", "var"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert tracked.stdout == ""


def test_only_the_store_schema_holds_migrations() -> None:
    """Every table is a migration of the one registry in store.schema, applied once by
    the writer when it opens the database; no module keeps or applies a set of its own."""
    breaches = [
        name
        for name, tree in source_modules()
        if name != "store.schema"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom | ast.Import)
        and any(
            "sqlite_utils.migrations" in (getattr(node, "module", None) or "", alias.name)
            for alias in node.names
        )
    ]
    assert breaches == []


def test_no_class_or_function_over_the_size_limit_outside_the_debt() -> None:
    breaches = [
        name
        for module, tree in source_modules()
        for name in oversized(module, tree)
        if name not in SIZE_DEBT
    ]
    assert breaches == [], "split these into short collaborators with one job each"


def test_every_entry_in_the_size_debt_still_breaks_the_limit() -> None:
    still = {name for module, tree in source_modules() for name in oversized(module, tree)}
    paid = sorted(SIZE_DEBT - still)
    assert paid == [], "remove these from SIZE_DEBT: they are within the limit now"


def test_size_counts_a_method_inside_its_class_and_includes_the_docstring() -> None:
    body = "\n".join(f"        x = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    source = f'class A:\n    def f(self) -> None:\n        """Doc."""\n{body}\n'
    assert oversized("m", ast.parse(source)) == ["m.A.f"]
    assert oversized("m", ast.parse(source.replace('        """Doc."""\n', ""))) == []
