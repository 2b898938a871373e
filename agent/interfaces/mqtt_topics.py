"""The miner's MQTT topic tree, and which topics a client may ask replies to go to."""

from __future__ import annotations

from dataclasses import dataclass

MAX_TOPIC_BYTES = 1024  # far above any topic we use; MQTT allows 65535


@dataclass(frozen=True)
class Topics:
    prefix: str
    miner: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.miner}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def cmd_reply(self) -> str:
        return f"{self.base}/cmd/reply"

    def slot_state(self, slot: int) -> str:
        return f"{self.base}/slot/{slot}/state"

    def may_reply_to(self, topic: object, discovery_prefix: str) -> str | None:
        """Why a requester's ResponseTopic is refused, or None if replies may go there.

        A reply is published under the agent's own identity, so it must not land where
        consumers expect the agent's state: anything under the topic prefix (every miner's
        tree) but `cmd/reply`, the discovery tree, or `$`-topics. Wildcards and NUL are not
        topics one can publish to.
        """
        if not isinstance(topic, str) or not topic:
            return "ResponseTopic must be a non-empty topic"
        if len(topic.encode()) > MAX_TOPIC_BYTES:
            return f"ResponseTopic longer than {MAX_TOPIC_BYTES} bytes"
        if any(c in topic for c in "+#\0"):
            return "ResponseTopic must be a plain topic, without wildcards"
        if topic == self.cmd_reply:
            return None
        for tree in (self.prefix, discovery_prefix):
            if topic == tree or topic.startswith(f"{tree}/"):
                return f"ResponseTopic may not be inside {tree}/ (the agent publishes there)"
        if topic.startswith("$"):
            return "ResponseTopic may not be a $-topic"
        return None
