"""Settings of the technician control socket (`control_socket`).

Declared apart from the service so the config assembles it without importing the
service (`config` imports settings, never services)."""

from __future__ import annotations

from dataclasses import dataclass

from hashbay.agent.core.settings import setting
from hashbay.drivers.errors import ConfigError

GROUP_PATTERN = r"[a-z_][a-z0-9_-]{0,31}"


@dataclass(frozen=True, kw_only=True)
class ControlSettings:
    enabled: bool = setting(
        True, "Serve the technician control socket (the `hashbay` command) in agent.runtime_dir."
    )
    socket: str = setting(
        "control.sock",
        "File name of the socket in agent.runtime_dir.",
        pattern=r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}",
    )
    group: str = setting(
        "hashbay",
        "Group that owns the socket (mode 0660): its members may read. If there is no such "
        "group the socket keeps the agent's own group.",
        pattern=GROUP_PATTERN,
    )
    admin_group: str = setting(
        "hashbay-admin",
        "Members of this group (and root) may change things: prepare swaps, power target, "
        "fans, quiet mode, curtailment, tuning, slot resets. They must also be able to open "
        "the socket (be in `group`).",
        pattern=GROUP_PATTERN,
    )
    max_clients: int = setting(
        32, "Clients served at once; more are turned away with a `busy` error.", min=1, max=1024
    )
    max_clients_per_user: int = setting(
        8,
        "Connections one user (uid) may hold at once; more are turned away with `busy`.",
        min=1,
        max=1024,
    )
    reserved_for_admins: int = setting(
        4,
        "Of `max_clients`, connections only root and the admin group may take, so a "
        "technician who can fix things always gets in.",
        min=0,
        max=1023,
    )
    send_timeout_s: float = setting(
        5.0,
        "A client that leaves a reply or an event unread this long is disconnected.",
        unit="s",
        min=0.1,
        max=120,
    )
    request_timeout_s: float = setting(
        10.0,
        "Once a request frame has begun, all of it must arrive within this time.",
        unit="s",
        min=0.1,
        max=120,
    )

    def __post_init__(self) -> None:
        if self.reserved_for_admins >= self.max_clients:
            raise ConfigError(
                f"control.reserved_for_admins: {self.reserved_for_admins} must be below "
                f"control.max_clients ({self.max_clients}), or no reader could connect"
            )
