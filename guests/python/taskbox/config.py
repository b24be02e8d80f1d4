"""The module's settings, which the operator sets in the host config
(`[modules.NAME] config = {...}, secrets = {...}`). Secret values reach the task and nothing
else: the host hides them in the job's log.
"""

from wit_world.imports import config

from .errors import Fatal


def get(key: str, default: str | None = None) -> str | None:
    """The value of `key`, or `default` when the operator did not set it."""
    value = config.get(key)
    return default if value is None else value


def require(key: str) -> str:
    """The value of `key`; raises `Fatal` naming the key when the operator did not set it."""
    value = config.get(key)
    if value is None:
        raise Fatal(
            f"the module setting `{key}` is not set: the operator sets it in the host config"
        )
    return value
