"""The catalog's errors: what a broken catalog file or a refused setting
value looks like to the owner."""

from __future__ import annotations

import logging

from bot.errors import HomeportError, UserError

log = logging.getLogger(__name__)


class CatalogError(HomeportError):
    """One problem in one catalog file. str() is the one line the owner sees:
    ``FILE: app APP: FIELD: REASON``."""

    def __init__(self, file: str, app: str | None, field: str, reason: str):
        self.file = file
        self.app = app
        self.field = field
        self.reason = reason
        where = [file]
        if app is not None:
            where.append(f"app {app}")
        if field:
            where.append(field)
        super().__init__(": ".join([*where, reason]))


class SettingError(UserError):
    """An owner-supplied setting value was refused; `reason` says why in
    words fit for chat, str() adds the setting's name."""

    def __init__(self, setting: str, reason: str):
        self.setting = setting
        self.reason = reason
        super().__init__(f"{setting}: {reason}")


class Invalid(Exception):
    """One field is wrong: raised by the parsers with the field's path, and
    collected into CatalogErrors (package-internal)."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
