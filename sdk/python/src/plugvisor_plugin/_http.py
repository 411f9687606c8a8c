"""HTTP for plugins (plugvisor.v1.Http): not written yet."""

from __future__ import annotations


class HttpComponent:
    @classmethod
    def for_app(cls, app: object) -> HttpComponent:
        raise NotImplementedError("run(http=...) is not implemented yet")

    def register(self, server: object, runtime: object) -> None: ...

    def stopping(self) -> None: ...

    def stopped(self) -> None: ...

    def startup(self) -> None: ...

    def shutdown(self) -> None: ...
