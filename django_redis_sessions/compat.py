"""The async session API of Django 5.1+, for Django 4.2.

Django 5.1 added ``aget``, ``aset``, ``acycle_key`` and friends to SessionBase.
On older versions this mixin provides them: each loads the session natively
(``_aget_session``) and then runs the in-memory sync method, which no longer
needs I/O. On Django 5.1+ the mixin is empty and Django's own methods are used.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.sessions.backends.base import SessionBase

_MISSING = object()

if TYPE_CHECKING or hasattr(SessionBase, "aget"):

    class AsyncSessionAPI:
        """Django 5.1+ provides the async API itself."""

else:  # pragma: no cover - exercised only on Django < 5.1

    class AsyncSessionAPI(SessionBase):
        async def _aget_session(self, no_load: bool = False) -> dict[str, Any]:
            self.accessed = True
            if not hasattr(self, "_session_cache"):
                if self.session_key is None or no_load:
                    self._session_cache = {}
                else:
                    self._session_cache = await self.aload()
            return self._session_cache

        async def aget(self, key: str, default: Any = None) -> Any:
            return (await self._aget_session()).get(key, default)

        async def aset(self, key: str, value: Any) -> None:
            await self._aget_session()
            self[key] = value

        async def apop(self, key: str, default: Any = _MISSING) -> Any:
            await self._aget_session()
            return self.pop(key) if default is _MISSING else self.pop(key, default)

        async def asetdefault(self, key: str, value: Any) -> Any:
            await self._aget_session()
            return self.setdefault(key, value)

        async def aupdate(self, dict_: dict[str, Any]) -> None:
            await self._aget_session()
            self.update(dict_)

        async def ahas_key(self, key: str) -> bool:
            return key in await self._aget_session()

        async def akeys(self) -> Any:
            return (await self._aget_session()).keys()

        async def avalues(self) -> Any:
            return (await self._aget_session()).values()

        async def aitems(self) -> Any:
            return (await self._aget_session()).items()

        async def aset_test_cookie(self) -> None:
            await self.aset("testcookie", "worked")

        async def atest_cookie_worked(self) -> bool:
            return bool(await self.aget("testcookie") == "worked")

        async def adelete_test_cookie(self) -> None:
            await self._aget_session()
            del self["testcookie"]

        async def aset_expiry(self, value: Any) -> None:
            await self._aget_session()
            self.set_expiry(value)

        async def aget_expiry_age(self, **kwargs: Any) -> int:
            if "expiry" not in kwargs:
                await self._aget_session()
            return self.get_expiry_age(**kwargs)

        async def aget_expiry_date(self, **kwargs: Any) -> datetime:
            if "expiry" not in kwargs:
                await self._aget_session()
            return self.get_expiry_date(**kwargs)

        async def aget_expire_at_browser_close(self) -> bool:
            await self._aget_session()
            return self.get_expire_at_browser_close()

        async def aflush(self) -> None:
            self.clear()
            await self.adelete()
            self._session_key = None

        async def acycle_key(self) -> None:
            data = await self._aget_session()
            key = self.session_key
            await self.acreate()
            self._session_cache = data
            if key:
                await self.adelete(key)
