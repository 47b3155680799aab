"""The manual (docs/) against the code: it cannot drift from what the code does.

- every ``SESSION_REDIS`` key the code accepts has its entry in docs/settings.rst,
  with the code's default, and no entry names a key the code refuses;
- every management command and every system check id has its section in
  docs/operations.rst, and the other way round;
- the Python blocks marked ``:class: runnable`` run, in page order, against the
  suite's Redis;
- the commands' example outputs (``:class: command-output``) are what the
  command prints today on a store made for it, up to the figures.

The HTML build itself (warnings as errors) and its pages in a browser are tox's
``docs`` environment (tests/e2e/test_docs_site.py).
"""

from __future__ import annotations

import ast
import os
import re
from collections.abc import Callable, Iterator, Mapping
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client, override_settings

from django_redis_sessions import conf, connection, crypto, plan
from django_redis_sessions.connection import Server
from django_redis_sessions.session import SessionStore
from tests.conftest import session_redis

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "django_redis_sessions"


# What the code has ---------------------------------------------------------------


def code_settings() -> dict[str, Any]:
    """The ``SESSION_REDIS`` keys the code accepts, each with its default.

    The one place that knows how the code lists its keys: the settings parser's
    own refusal of an unknown key names every known one (the core's and each
    feature's), and a parse of no setting at all holds the defaults: the core's
    config, and each feature's as its own module reads an empty setting.
    """
    with pytest.raises(ImproperlyConfigured) as refused:
        plan.parse({"not a setting": 1})
    listed = re.search(r"known keys are (.+)\.$", str(refused.value))
    assert listed, refused.value
    empty = plan.parse(None)
    index = empty.users
    features: dict[str, Any] = {
        **crypto.parse_settings({}),
        "idle_timeout": empty.timeouts.idle_timeout if empty.timeouts else None,
        "absolute_timeout": empty.timeouts.absolute_timeout if empty.timeouts else None,
        "user_index": index.enabled,
        "activity_interval": index.activity_interval,
        "client_ip": index.client_ip,
        "store_user_agent": index.store_user_agent,
        "max_sessions_per_user": index.max_sessions_per_user,
        # No migration: its keys read as absent.
        "migrate_from": None,
        "migrate_from_options": None,
        "migrate_write_back": False,
    }
    assert empty.migration is None
    core = empty.config
    return {
        key: features[key] if key in features else getattr(core, key)
        for key in listed[1].split(", ")
    }


def code_commands() -> set[str]:
    folder = PACKAGE / "management" / "commands"
    return {path.stem for path in folder.glob("*.py") if not path.stem.startswith("_")}


def code_check_ids() -> set[str]:
    return set(re.findall(r'id="(django_redis_sessions\.[EW]\d{3})"', _read(PACKAGE / "checks.py")))


# What the manual says ------------------------------------------------------------


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


SETTING = re.compile(
    r"^``(?P<key>\w+)``\n-+\n\n"
    r":Type: (?P<type>.+)\n:Default: ``(?P<default>.+)``\n:Example: ``(?P<example>.+)``\n",
    re.MULTILINE,
)


def doc_settings() -> dict[str, dict[str, str]]:
    text = _read(DOCS / "settings.rst")
    found: dict[str, dict[str, str]] = {}
    for match in SETTING.finditer(text):
        assert match["key"] not in found, f"{match['key']} has two entries"
        found[match["key"]] = match.groupdict()
    # Every section that looks like a key has the full entry (type, default, example).
    headings = re.findall(r"^``(\w+)``\n-+\n", text, re.MULTILINE)
    assert sorted(headings) == sorted(found), "a key's entry lacks :Type:, :Default: or :Example:"
    return found


def doc_commands() -> set[str]:
    return set(re.findall(r"^\.\. command-help:: (\w+)$", _read(DOCS / "operations.rst"), re.M))


def doc_check_ids() -> set[str]:
    text = _read(DOCS / "operations.rst")
    return set(re.findall(r"^``(django_redis_sessions\.[EW]\d{3})``\n[-~^]+\n", text, re.M))


def _plain(value: Any) -> Any:
    """Compare as written in the manual: tuples as lists, mappings as dicts."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


# The manual against the code ---------------------------------------------------


def test_every_setting_is_in_the_manual_and_only_those() -> None:
    documented, accepted = set(doc_settings()), set(code_settings())
    assert accepted - documented == set(), "keys the code accepts, missing from docs/settings.rst"
    assert documented - accepted == set(), "keys in docs/settings.rst that the code refuses"


def test_the_manual_gives_the_codes_defaults() -> None:
    defaults = code_settings()
    for key, entry in doc_settings().items():
        assert _plain(ast.literal_eval(entry["default"])) == _plain(defaults[key]), key


def test_each_documented_example_is_taken_for_its_key() -> None:
    for key, entry in doc_settings().items():
        try:
            example = ast.literal_eval(entry["example"])
        except ValueError:  # an expression, e.g. read from os.environ
            continue
        try:
            plan.parse({key: example})
        except ImproperlyConfigured as exc:
            # Alone, some keys need their companions (service_name with sentinels, ...);
            # what matters is that the key itself is known.
            assert "unknown key" not in str(exc), exc


def test_every_command_is_in_the_manual_and_only_those() -> None:
    assert code_commands() == doc_commands()
    assert code_commands() >= {"sessions_report", "end_sessions", "migrate_sessions"}


def test_every_check_is_in_the_manual_and_only_those() -> None:
    ids = code_check_ids()
    assert "django_redis_sessions.W101" in ids
    assert ids == doc_check_ids()


def test_every_page_is_in_the_table_of_contents() -> None:
    index = _read(DOCS / "index.rst")
    listed = set(re.findall(r"^   (\w+)$", index, re.MULTILINE))
    pages = {path.stem for path in DOCS.glob("*.rst")} - {"index"}
    assert pages == listed


# Blocks meant to run -------------------------------------------------------------

BLOCK = re.compile(
    r"^\.\. code-block:: (?P<language>\w+)\n(?P<options>(?: +:.*\n)*)\n(?P<body>(?:    .*\n|\n)+)",
    re.MULTILINE,
)


def blocks(page: Path, language: str, css_class: str) -> list[str]:
    found = []
    for match in BLOCK.finditer(_read(page)):
        if match["language"] == language and f":class: {css_class}" in match["options"]:
            lines = match["body"].rstrip("\n").split("\n")
            found.append("\n".join(line[4:] for line in lines) + "\n")
    return found


RUNNABLE_PAGES = sorted(
    path.name for path in DOCS.glob("*.rst") if blocks(path, "python", "runnable")
)


def test_the_manual_has_runnable_examples() -> None:
    assert {"install.rst", "signals.rst", "users.rst"} <= set(RUNNABLE_PAGES)


@pytest.mark.django_db
@pytest.mark.parametrize("page", RUNNABLE_PAGES)
def test_runnable_blocks_run(page: str) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs.{page}"}
    for number, code in enumerate(blocks(DOCS / page, "python", "runnable"), 1):
        exec(compile(code, f"docs/{page} (runnable block {number})", "exec"), namespace)


# The commands' example outputs -----------------------------------------------------


def shape(text: str) -> list[str]:
    """A command's output without its figures: digests, dates, counts and sizes vary."""
    lines = []
    for line in text.strip("\n").split("\n"):
        line = re.sub(r"\b[0-9a-f]{32}\b", "<digest>", line)
        line = re.sub(r"\d[\d,.:-]*", "#", line)
        lines.append(" ".join(line.split()))
    return lines


def outputs() -> list[tuple[str, str]]:
    """(command line, documented output) of every example output in the manual."""
    found = []
    for page in sorted(DOCS.glob("*.rst")):
        for block in blocks(page, "text", "command-output"):
            first, _, rest = block.partition("\n")
            assert first.startswith("$ python manage.py "), f"{page.name}: {first}"
            found.append((first.removeprefix("$ python manage.py "), rest))
    return found


def store_for_report(r: Any) -> None:
    from tests.test_sessions_report import fill

    fill(r)  # 3,000 sessions, 1,000 of them signed in, one in ten compressed


def store_for_end_sessions(r: Any) -> None:
    ada = get_user_model().objects.create_user("ada")
    for agent in (
        "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Version/18.1 Mobile Safari/604.1",
    ):
        client = Client(HTTP_USER_AGENT=agent, REMOTE_ADDR="192.0.2.7")
        client.get("/login/", {"username": "ada"})
        assert client.get("/whoami/").content.decode() == ada.get_username()


def store_for_migration(r: Any) -> None:
    from django.contrib.sessions.backends.db import SessionStore as DbStore

    for i in range(12):
        old = DbStore()
        old["visits"] = i
        old.save()
    expired = DbStore()
    expired.set_expiry(-1)
    expired.save()


def store_for_reencrypt(r: Any) -> None:
    for i in range(9):
        session = SessionStore()
        session["visits"] = i
        session.save()


KEY_1 = "k1:" + "A" * 43
SCENARIOS: dict[str, tuple[Callable[[Any], None], dict[str, Any]]] = {
    "sessions_report": (store_for_report, {}),
    "end_sessions": (store_for_end_sessions, {}),
    "migrate_sessions": (
        store_for_migration,
        {"migrate_from": "django.contrib.sessions.backends.db"},
    ),
    "reencrypt_sessions": (store_for_reencrypt, {}),
}
# What each command runs under, after the store was made (see its page).
RUN_WITH = {"reencrypt_sessions": {"encryption_keys": [KEY_1], "encryption": "write"}}


@pytest.fixture
def fresh_config() -> Iterator[None]:
    conf.get_config.cache_clear()
    connection.reset()
    yield
    conf.get_config.cache_clear()
    connection.reset()


def test_every_command_has_an_example_output() -> None:
    assert {line.split()[0] for line, _ in outputs()} == code_commands()


@pytest.mark.single_only  # a Cluster's report also lists its nodes
@pytest.mark.plaintext_values
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("line", [line for line, _ in outputs()])
def test_example_outputs_are_what_the_command_prints(line: str, r: Any, fresh_config: None) -> None:
    documented = dict(outputs())[line]
    name, *args = line.split()
    make_store, settings_for_store = SCENARIOS[name]
    with override_settings(SESSION_REDIS=session_redis(**settings_for_store)):
        make_store(r)
    out = StringIO()
    with override_settings(
        SESSION_REDIS=session_redis(**settings_for_store, **RUN_WITH.get(name, {}))
    ):
        conf.get_config.cache_clear()
        call_command(name, *args, stdout=out, stderr=StringIO())
    assert shape(out.getvalue()) == shape(documented), out.getvalue()


def test_the_documented_acl_user_is_the_tested_one() -> None:
    from tests.test_faults import ACL_RULES
    from tests.test_users import INDEX_ACL_RULES

    line = re.search(r"^    ACL SETUSER sessions (.+)$", _read(DOCS / "failure.rst"), re.M)
    assert line
    documented = [rule for rule in line[1].split() if not rule.startswith(">")]  # password
    assert documented == [r for r in ACL_RULES + INDEX_ACL_RULES if not r.startswith(">")]


def test_the_readme_is_a_front_page_linking_every_part_of_the_manual() -> None:
    readme = _read(ROOT / "README.rst")
    assert len(readme.splitlines()) < 150
    targets = re.findall(r"`[^`<]+<([^>]+)>`_", readme)
    assert [t for t in targets if not (ROOT / t).exists()] == []
    pages = {f"docs/{path.name}" for path in DOCS.glob("*.rst")}
    pages -= {"docs/changelog.rst"}  # the README links CHANGELOG.rst itself
    assert pages - {"docs/index.rst"} <= set(targets)
    assert "CHANGELOG.rst" in targets


def test_the_server_under_test_is_one_the_readme_names(redis_server: Server) -> None:
    """README names the servers the suite runs on: this run's is one of them."""
    if os.environ.get("REDIS_URL"):
        pytest.skip("REDIS_URL points the suite at a server of the user's choosing")
    readme = " ".join(_read(ROOT / "README.rst").split())
    version = ".".join(map(str, redis_server.version))
    if redis_server.name == "valkey":
        assert f"Valkey {version}" in readme
    else:
        assert f"Redis {version}" in readme or f"Redis {redis_server.version[0]} " in readme
