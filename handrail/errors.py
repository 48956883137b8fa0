"""The root of handrail's typed errors.

Every stage raises subclasses of :class:`HandrailError` whose message names the thing, the value
and the fix, e.g. ``motor 7 (index_pip): no status packet within 20 ms — check the cable and the id``.
"""


class HandrailError(Exception):
    """Base class of every error handrail raises on purpose."""
