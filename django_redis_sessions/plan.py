"""Which features are on, and in what order the store calls them: built once per configuration.

``SESSION_REDIS`` is parsed in two steps: ``conf`` reads the core keys, then each
feature here reads its own (``KEYS`` and ``configure`` in its module); a key
that neither the core nor any feature owns is refused, naming it.

The plan fills the store's extension points (see ``hooks``):

- the codec slot: ``crypto.Codec`` with encryption keys, else ``hooks.Codec``;
- the clock slot: ``timeouts.Clock`` with a timeout, else none;
- the layers, in this fixed order: the user index (``userindex``), then the
  migration (``migration``). Around a save the first layer is outermost (the
  index entry goes in before the session and its old-store copy); on a load,
  a miss and an end they run in this order.

For each hook the plan keeps only the layers that implement it, so a hook
nobody implements costs the store one empty-tuple test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver

from django_redis_sessions import conf, connection, crypto, hooks, migration, timeouts, userindex

#: Every key of SESSION_REDIS: the core's and each feature's.
KNOWN_KEYS = conf.KNOWN_KEYS | crypto.KEYS | timeouts.KEYS | userindex.KEYS | migration.KEYS


@dataclass(frozen=True)
class Plan:
    config: conf.Config
    codec: hooks.Codec
    clock: Callable[[], hooks.Clock] | None
    layers: tuple[hooks.Layer, ...]
    # Each feature's own settings (None: off).
    encryption: crypto.Config | None
    timeouts: timeouts.Config | None
    users: userindex.Config
    migration: migration.Config | None
    # The layers implementing each hook, in order.
    loaders: tuple[hooks.Layer, ...] = ()
    savers: tuple[hooks.Layer, ...] = ()
    missers: tuple[hooks.Layer, ...] = ()
    enders: tuple[hooks.Layer, ...] = ()
    tombstones: tuple[hooks.Layer, ...] = ()
    expirers: tuple[hooks.Layer, ...] = ()
    # Whether the codec may find a stored value not as it writes it (else a load
    # does not ask).
    reseals: bool = False


def parse(raw: Any) -> Plan:
    """Validate a whole ``SESSION_REDIS`` value and build its plan."""
    config = conf.parse(raw)
    return build(config)


def build(config: conf.Config) -> Plan:
    unknown = sorted(set(config.features) - KNOWN_KEYS)
    if unknown:
        raise conf.fail(
            None,
            f"unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys are {', '.join(sorted(KNOWN_KEYS))}.",
        )
    encryption = crypto.configure(config)
    clocks = timeouts.configure(config)
    users = userindex.configure(config)
    moving = migration.configure(config)
    layers: list[hooks.Layer] = []
    layers.append(userindex.Index(users) if users.enabled else userindex.Unindexed(users))
    if moving is not None:
        layers.append(migration.Migration(moving, config))

    def having(name: str) -> tuple[hooks.Layer, ...]:
        return tuple(layer for layer in layers if hooks.overrides(layer, name))

    codec = crypto.Codec(encryption) if encryption else hooks.Codec(config.compress_min_bytes)
    return Plan(
        config=config,
        codec=codec,
        clock=timeouts.clock_factory(clocks) if clocks else None,
        layers=tuple(layers),
        encryption=encryption,
        timeouts=clocks,
        users=users,
        migration=moving,
        loaders=having("loaded"),
        savers=having("around_save"),
        missers=having("missing"),
        enders=having("ended"),
        tombstones=having("tombstone_ms"),
        expirers=having("clear_expired"),
        reseals=type(codec).is_current is not hooks.Codec.is_current,
    )


_cached: Plan | None = None


def get_plan() -> Plan:
    """The plan of the current settings (built again when ``conf`` parses them again).

    Two threads meeting new settings may both build it: plans are immutable
    and equal, so either one serves.
    """
    global _cached
    config = conf.get_config()
    cached = _cached
    if cached is None or cached.config is not config:
        cached = _cached = build(config)
    return cached


@receiver(setting_changed)
def _reset(*, setting: str, **kwargs: Any) -> None:
    if setting in conf.WATCHED:
        connection.reset()
