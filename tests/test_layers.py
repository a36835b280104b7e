"""Which package may import which: the layers of ``server`` (``.importlinter``), no cycles, no imports hidden in
functions, production code that never imports the WeChat sandbox, and helpers that live once.

``server`` imports ``wechat_sandbox`` only inside the functions listed in ``LAZY_SANDBOX_IMPORTS``,
each on a path that runs in sandbox mode alone; ``wechat_sandbox`` takes from ``server`` only what a
fake of WeChat shares with the app (``SANDBOX_IMPORTS_FROM_SERVER``).
"""
from __future__ import annotations

import ast
import graphlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The only places ``server`` imports the sandbox: (file, function), each reached only when WECHAT_SANDBOX is on.
LAZY_SANDBOX_IMPORTS = {
    # ``run`` (in sandbox mode) and ``sandbox`` start the fake WeChat on its own port.
    ("server/cli.py", "_start_sandbox"),
    # In sandbox mode without configured v3 PEM paths, the app's WeChat Pay client uses the key pairs
    # the sandbox generates (and the sandbox holds their other halves).
    ("server/wechat/pay.py", "v3_key_config"),
}

#: What the sandbox may import from ``server``: WeChat's wire formats and the credentials both sides know.
SANDBOX_IMPORTS_FROM_SERVER = {
    "server.api",  # JSONProvider: JSON bodies nested too deeply are bad JSON, not a RecursionError
    "server.config",  # SANDBOX_DEFAULTS, the public sandbox credentials; Config, the environment's merchant
    "server.wechat.client",  # redact_url
    "server.wechat.formats",  # the scene's characters and length
    "server.wechat.pay",  # WeChat Pay's limits, Beijing time, v2 XML, PEM loading, the muted wechatpy loggers
}


def _imported_modules(node: ast.AST) -> list[str]:
    """The modules ``node`` imports, if it is an import statement or an ``import_module``/``__import__`` call."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""] if node.level == 0 else []
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in {"import_module", "__import__"}:
            return [node.args[0].value]
    return []


def _imports(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, enclosing function or None at module level, line) for every import in ``path``."""

    def walk(node: ast.AST, function: str | None) -> Iterator[tuple[str, str | None, int]]:
        for child in ast.iter_child_nodes(node):
            for module in _imported_modules(child):
                yield module, function, getattr(child, "lineno", 0)
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            yield from walk(child, inner)

    yield from walk(ast.parse(path.read_text(encoding="utf-8"), str(path)), None)


def _is_sandbox(module: str) -> bool:
    return module == "wechat_sandbox" or module.startswith("wechat_sandbox.")


def _python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_server_imports_the_sandbox_only_inside_the_listed_functions() -> None:
    module_level, lazy = [], set()
    for path in _python_files("server"):
        name = path.relative_to(ROOT).as_posix()
        for module, function, line in _imports(path):
            if _is_sandbox(module):
                if function is None:
                    module_level.append(f"{name}:{line} imports {module} at module level")
                else:
                    lazy.add((name, function))
    assert module_level == []
    assert lazy == LAZY_SANDBOX_IMPORTS


def test_the_sandbox_imports_from_server_only_what_wechat_shares() -> None:
    found = {
        (path.relative_to(ROOT).as_posix(), module)
        for path in _python_files("wechat_sandbox")
        for module, _, _ in _imports(path)
        if module == "server" or module.startswith("server.")
    }
    assert found, "the walk found no imports at all"
    assert {module for _, module in found} <= SANDBOX_IMPORTS_FROM_SERVER, sorted(found)


def test_a_production_app_never_loads_the_sandbox() -> None:
    """Every module of ``server`` imported and a non-sandbox app built, in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WECHAT_", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "APP_ENV", "PUBLIC_BASE_URL"))}
    env.update(
        APP_ENV="production",
        WECHAT_APPID="wxlayerstest00001",
        WECHAT_SECRET="layers-secret",
        SECRET_KEY="layers-test-key-" + "k" * 32,
        DATABASE_URL="sqlite://",
        PUBLIC_BASE_URL="https://shop.example.com",
    )
    script = (
        "import importlib, pkgutil, sys\n"
        "import server\n"
        "for module in pkgutil.walk_packages(server.__path__, 'server.'):\n"
        "    importlib.import_module(module.name)\n"
        "app = server.create_app()\n"
        "assert not app.config['WECHAT_SANDBOX']\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'wechat_sandbox'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


#: Pieces that live once: the module that has them, and text that would mean a copy of them elsewhere.
SHARED_ONCE = {
    "China time": ("server/clock.py", 'ZoneInfo("Asia/Shanghai")'),
    "a page of a query and its total": ("server/db.py", ".subquery())) or 0"),
    "timestamps in responses": ("server/api.py", "isoformat() if value else None"),
}


@pytest.mark.parametrize("what", sorted(SHARED_ONCE))
def test_shared_helpers_live_once(what: str) -> None:
    home, text = SHARED_ONCE[what]
    found = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "server").rglob("*.py") if text in path.read_text(encoding="utf-8"))
    assert found == [home], f"{what} is written again outside {home}: call it from there"


# -- the layers of ``server`` -----------------------------------------------------------------------

#: The only functions of ``server`` that may import ``server`` modules inside their body: the app factory
#: and each package's ``init_app`` wire routes and handlers together after every module has loaded.
WIRING_FUNCTIONS = {"create_app", "init_app"}


def test_the_import_contracts_hold() -> None:
    """``.importlinter``: each layer imports only the layers below; models and query modules import no services."""
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())", "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_module_of_server_takes_part_in_an_import_cycle() -> None:
    graph = grimp.build_graph("server", include_external_packages=False, cache_dir=None)
    edges = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    assert sum(len(found) for found in edges.values()) > 300, "the import graph came back empty"
    try:
        tuple(graphlib.TopologicalSorter(edges).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_imports_inside_functions_are_only_wiring() -> None:
    found = sorted(
        f"{path.relative_to(ROOT).as_posix()}:{line} imports {module} inside {function}()"
        for path in _python_files("server")
        for module, function, line in _imports(path)
        if function is not None
        and (module == "server" or module.startswith("server."))
        and function not in WIRING_FUNCTIONS
        and (path.relative_to(ROOT).as_posix(), function) not in LAZY_SANDBOX_IMPORTS
    )
    assert found == [], "import at module level; a cycle that forces a local import means a layer points up"


def test_no_private_name_is_imported_from_another_module() -> None:
    found = []
    for path in _python_files("server"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                found += [
                    f"{path.relative_to(ROOT).as_posix()}:{node.lineno} imports {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert found == [], "a name another module needs is part of its interface: drop the underscore"
