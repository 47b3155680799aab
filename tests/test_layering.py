"""The package's shape: imports run downward, the core knows no feature.

Read from the source (AST), so an import inside a function or under
``TYPE_CHECKING`` counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.test import override_settings

import django_redis_sessions
from django_redis_sessions import hooks, migration, plan, userindex
from django_redis_sessions.session import SessionStore
from tests.conftest import session_redis

PACKAGE = "django_redis_sessions"
ROOT = Path(django_redis_sessions.__file__).parent
#: The optional features: the core must work, and import, without any of them.
FEATURES = {"crypto", "timeouts", "userindex", "users", "migration"}
#: Modules that plug into the store as layers or slots: they use ``hooks.Store``.
PLUGINS = ("crypto", "timeouts", "userindex", "migration")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".") if name != PACKAGE else name


def imports_of(path: Path) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in it."""
    found: set[str] = set()
    here = module_name(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                package = here.split(".")[: -node.level if path.name != "__init__.py" else None]
                base = ".".join([*package, base] if base else package)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    return {name for name in found if name in modules and name != here} - {PACKAGE}


def graph() -> dict[str, set[str]]:
    return {
        short(module_name(path)): {short(name) for name in imports_of(path)}
        for path in sorted(ROOT.rglob("*.py"))
    }


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in edges.get(node, ()):
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_every_kind_of_import() -> None:
    edges = graph()
    assert "driver" in edges["session"]  # from ... import name
    assert "session" in edges["users"]  # a top-level module import
    assert "plan" in edges["apps"]  # an import inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_core_imports_no_feature() -> None:
    edges = graph()
    assert edges["conf"] == set()
    assert edges["session"] & FEATURES == set()
    for ground in ("codec", "scripts", "signals", "exceptions", "hooks", "driver", "connection"):
        assert edges[ground] & FEATURES == set(), ground


def test_plugins_use_the_store_protocol_not_its_private_members() -> None:
    for name in PLUGINS:
        tree = ast.parse((ROOT / f"{name}.py").read_text())
        private = [
            f"{node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "store"
            and node.attr.startswith("_")
        ]
        assert private == [], name
        assert {"session", "plan"} & graph()[name] == set(), name


# The plan: built once per configuration, in its documented order ---------------------


def test_one_plan_per_configuration() -> None:
    assert plan.get_plan() is plan.get_plan()
    with override_settings(SESSION_REDIS=session_redis(user_index=False)):
        assert plan.get_plan() is plan.get_plan()
        assert plan.get_plan().users.enabled is False


def test_layers_in_their_documented_order() -> None:
    built = plan.parse({"migrate_from": migration.DB})
    assert [type(layer) for layer in built.layers] == [userindex.Index, migration.Migration]
    assert built.missers == (built.layers[1],)
    assert built.savers == built.layers and built.enders == built.layers
    assert built.tombstones == (built.layers[1],)


def test_with_no_feature_on_no_hook_runs_on_a_load() -> None:
    built = plan.parse({"user_index": False})
    assert built.clock is None and type(built.codec) is hooks.Codec
    assert built.loaders == built.missers == built.enders == built.tombstones == ()
    assert [type(layer) for layer in built.savers] == [userindex.Unindexed]


@pytest.mark.parametrize("key", ["bogus", "idle_timout"])
def test_a_key_no_one_owns_is_refused_by_name(key: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=f"unknown key\\(s\\) '{key}'"):
        plan.parse({key: 1})


def test_a_layer_hook_left_alone_does_nothing() -> None:
    layer, store = hooks.Layer(), SessionStore()
    ending = hooks.Ending("0" * 32, hooks.DELETED)
    write = iter([("GET", "k")])
    assert layer.loaded(store, "k" * 32, {}) is None
    assert layer.around_save(store, "k" * 32, {}, False, write) is write  # type: ignore[arg-type]
    assert list(layer.missing(store, "cookie")) == []
    assert list(layer.ended(store, ending)) == []
    assert (layer.tombstone_ms(store, ending), layer.wants_data(ending)) == (0, False)
    layer.clear_expired()
    assert not any(hooks.overrides(layer, name) for name in ("loaded", "ended", "missing"))
