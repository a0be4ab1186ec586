"""What the console needs from the control plane: read the state as console models, and optionally act."""

from __future__ import annotations

from typing import Awaitable, Optional, Protocol, Union, runtime_checkable

from tidal.console.model import NodePools, Overview, ServiceDetail


@runtime_checkable
class ConsoleProvider(Protocol):
    """Reads; each method may return its value or an awaitable of it."""

    def overview(self) -> Union[Overview, Awaitable[Overview]]: ...

    def service(self, name: str) -> Union[Optional[ServiceDetail], Awaitable[Optional[ServiceDetail]]]:
        """None when there is no such service."""

    def nodepools(self) -> Union[NodePools, Awaitable[NodePools]]: ...


class ConsoleActions(Protocol):
    """Actions, offered only with the API token. A provider implements any of them; each returns a message
    for the user and raises a TidalError (NotFound, InvalidArgument, ...) when it cannot."""

    async def scale(self, service: str, replicas: int) -> str: ...

    async def preempt(self, node: str, notice_seconds: float | None) -> str:
        """`notice_seconds` None: the node pool's own notice."""


# Action name -> the provider method that carries it out (and the JSON body it takes).
ACTIONS = ("scale", "preempt")
