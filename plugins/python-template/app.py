"""The plugin's connection to keeper: the `keeper:mapper` exports.

componentize-py looks for the class `WitWorld` in this module and exports
its methods as the contract's `info`, `map` and `requested-limits` (world
`mapper-with-limits` of mapper-guest/wit/mapper.wit). The mapping itself is
in mapping.py; change that, not this.
"""

import traceback

from componentize_py_types import Err
from wit_world.imports import diagnostics, lookup, types

import mapping

# Recorded with every row this plugin writes: give your plugin its own name
# and bump the version with every change you deploy.
NAME = "keeper-python-mapper"
VERSION = "1.0.0"

# What this plugin needs, granted exactly when within the operator's ceilings
# (KEEPER_PLUGIN_MEMORY_MIB, 32 MiB by default; KEEPER_PLUGIN_TIMEOUT_MS,
# 100 ms): a plugin that runs away is stopped there, and one asking for more
# than a ceiling is refused, naming the setting to raise. None: the ceiling.
# The template was measured to need between 13 and 14 MiB to start and pass
# the conformance check (plugins/README.md); 20 leaves room for a long batch
# on one instance. Raise it if your mapping imports more modules.
MEMORY_MIB = 20
TIMEOUT_MS = None


class WitWorld:
    def info(self) -> types.PluginInfo:
        return types.PluginInfo(name=NAME, version=VERSION)

    def requested_limits(self) -> types.PluginLimits:
        return types.PluginLimits(memory_mib=MEMORY_MIB, timeout_ms=TIMEOUT_MS)

    def map(self, row: list[types.Column]) -> types.Mapped:
        try:
            columns = [(column.name, from_wit(column.value)) for column in row]
            mapped, warnings = mapping.map_row(columns, HostLookup())
            return types.Mapped(
                row=[types.Column(name=name, value=to_wit(value)) for name, value in mapped],
                warnings=warnings,
            )
        except mapping.Refused as refused:
            raise Err(types.MappingError(field=refused.field, message=refused.message)) from None
        except BaseException as error:
            # A crash: the item fails as "mapper trapped: ..." and the next
            # plugin version retries it. The host cannot see a traceback
            # (this component has no stderr), so say what happened first.
            diagnostics.report_crash(crash_report(error))
            raise


def crash_report(error):
    """`Type: message (at file, line N, in function)`: the exception and
    the last line of its traceback. Only what the frames hold is used:
    source lines would have to be read from files, which the sandbox does
    not have."""
    where = ""
    for frame, line in traceback.walk_tb(error.__traceback__):
        code = frame.f_code
        where = f" (at {code.co_filename.rsplit('/', 1)[-1]}, line {line}, in {code.co_name})"
    return f"{type(error).__name__}: {error}{where}"


class HostLookup:
    """The host's `lookup` import, as mapping.py expects it."""

    def find_system(self, name):
        return lookup.find_system(name)

    def find_planet(self, system_id, name):
        return lookup.find_planet(system_id, name)

    def find_moon(self, system_id, name):
        return lookup.find_moon(system_id, name)


def from_wit(value):
    if isinstance(value, types.Value_Null):
        return None
    return value.value


def to_wit(value):
    if value is None:
        return types.Value_Null()
    if isinstance(value, bool):
        raise TypeError(f"a mapped value must be None, int, float or str, not {value!r}")
    if isinstance(value, int):
        return types.Value_Integer(value)
    if isinstance(value, float):
        return types.Value_Real(value)
    return types.Value_Text(value)
