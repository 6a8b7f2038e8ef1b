"""What a visitor's conversation is held to (s2s/serve/converse.py): the server's limits, the
start message's checks, the WebSocket Origin check and the address conversations are counted by.

    limits = Limits(max_sessions=8, max_per_client=2, allowed_origins=("https://me.example",))
    rate, settings = parse_start(message)            # SessionClosed(1008, "...names the field...")
    origin_allowed(headers.get("origin"), headers, limits.allowed_origins)
    python -m s2s.serve.converse --max-per-client 4 --allowed-origins https://me.example

A public server is the internet: every number a visitor sends is checked (finite, in its range),
a page of another site cannot open a conversation in its visitor's name (browsers always send
Origin; a page's script cannot forge it), and one address cannot take every place.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

RATES = (8000, 48000)  # microphone sample rates accepted
# start settings: (default, type, lowest, highest); seed -1 or null = random
SETTINGS = {"temperature": (0.7, float, 0.0, 5.0), "top_k": (50, int, 0, 4096),
            "top_p": (1.0, float, 1e-6, 1.0), "seed": (None, int, 0, 2**64 - 1)}


@dataclass
class Limits:
    """What one server takes. turn_head: the end-of-turn and backchannel head ("bundled": the one in
    assets/turn_head, a folder, or "none": silence alone decides). With a head, the turn ends at
    the first pause (pause_ms of silence) where the head says the person has finished, or after
    fallback_silence_ms of silence; speech over a reply that stops within backchannel_max_ms and
    that the head calls a backchannel lets the reply go on. Without one, end_silence_ms of
    silence ends a turn (README: its choice) and any speech over a reply stops it.
    idle_timeout_s: no speech for this long (none heard, no reply being made or played) closes a
    conversation, frames or not; max_conversation_s closes any; max_per_client: conversations at
    once per client address; allowed_origins: page origins let in besides the server's own."""

    max_sessions: int = 8
    turn_head: str = "bundled"
    end_silence_ms: float = 224.0  # 7 VAD windows: 7% false cut-ins on the bundled prompts (README)
    fallback_silence_ms: float = 1000.0  # with a turn head: the silence that ends any turn
    backchannel_max_ms: float = 900.0  # with a head: longer speech over a reply stops it (90% of backchannels: shorter)
    min_speech_ms: float = 96.0
    pause_ms: float = 64.0  # silence after which a reply is prepared and the turn head asked (2 VAD windows)
    max_turn_seconds: float = 20.0
    max_reply_seconds: float = 10.0
    idle_timeout_s: float = 30.0
    start_timeout_s: float = 10.0
    max_frame_ms: float = 40.0
    flood_slack_s: float = 2.0  # audio may run this far ahead of real time, then the session closes
    max_conversation_s: float = 600.0  # then the conversation closes: a place is not held forever
    max_per_client: int = 2  # a person with two tabs; behind a proxy, see client_address
    reply_timeout_s: float = 30.0  # the longest wait for a reply's next step before it is given up
    allowed_origins: tuple[str, ...] = ()  # e.g. ("https://me.example",); "*": any page

    def __post_init__(self):
        for name, value in asdict(self).items():
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            if name not in ("allowed_origins", "turn_head") and not (number and 0 < value < math.inf):
                raise ValueError(f"Limits.{name} must be a positive number, got {value!r}")
        for name in ("max_sessions", "max_per_client"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"Limits.{name} must be an int, got {getattr(self, name)!r}")
        if not isinstance(self.turn_head, str) or not self.turn_head.strip():
            raise ValueError(f"Limits.turn_head must be 'bundled', 'none' or a folder, got {self.turn_head!r}")
        origins = (self.allowed_origins,) if isinstance(self.allowed_origins, str) else self.allowed_origins
        self.allowed_origins = tuple(o.strip().rstrip("/").lower() for o in origins if o.strip())
        for o in self.allowed_origins:
            if o != "*" and not (urlsplit(o).scheme in ("http", "https") and urlsplit(o).hostname
                                 and urlsplit(o).path == ""):
                raise ValueError(f"Limits.allowed_origins: {o!r} is not an origin like "
                                 "'https://name.example' or 'http://host:7860' (or '*' for any page)")


class SessionClosed(Exception):
    """Ends a session with a WebSocket close code and a reason the client sees."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason[:120]  # a close reason is at most 123 bytes


def parse_start(msg: dict) -> tuple[int, dict]:
    """The first message ({"type": "start", "sample_rate": ..., settings}) -> (rate, settings);
    SessionClosed(1008) naming the field, its value and what it may be."""
    try:
        start = json.loads(msg.get("text") or "")
    except ValueError:
        start = None
    if not isinstance(start, dict) or start.get("type") != "start":
        raise SessionClosed(1008, 'the first message must be {"type": "start", "sample_rate": ...}')
    rate = start.get("sample_rate")
    if isinstance(rate, bool) or not isinstance(rate, int) or not RATES[0] <= rate <= RATES[1]:
        raise SessionClosed(1008, f"sample_rate must be an int in [{RATES[0]}, {RATES[1]}], got {short(rate)}")
    settings = {}
    for key, (default, kind, low, high) in SETTINGS.items():
        value = start.get(key)
        if value is None or (key == "seed" and value == -1 and not isinstance(value, bool)):
            settings[key] = default
            continue
        what = "an int" if kind is int else "a number"
        ok = (not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else int)
              and math.isfinite(value) and low <= value <= high)
        if not ok:
            extra = " (-1 = random)" if key == "seed" else ""
            raise SessionClosed(1008, f"{key} must be {what} in [{low:g}, {high:g}]{extra}, got {short(value)}")
        settings[key] = float(value) if kind is float else value
    return rate, settings


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


def origin_allowed(origin: str | None, headers, allowed: tuple[str, ...] = ()) -> bool:
    """A browser's handshake comes from a page of the server's own origin (its Origin's host:port
    is the Host the request was sent to, or the proxy's X-Forwarded-Host) or of one `allowed`.
    No Origin header: not a browser (a browser always sends one), so no page to check."""
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    if "*" in allowed or origin in allowed:
        return True
    parts = urlsplit(origin)
    default = {"http": "80", "https": "443"}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:  # a port that is not a number
        return False
    if default is None or not parts.hostname:
        return False
    want = f"{parts.hostname}:{port or default}"
    for host in (headers.get("host"), headers.get("x-forwarded-host")):
        for h in (host or "").split(","):
            h = h.strip().lower()
            if h and (h if ":" in h.rsplit("]", 1)[-1] else f"{h}:{default}") == want:
                return True
    return False


def client_address(ws) -> str:
    """The address conversations are counted by: the peer's, or behind a proxy (a peer that is not
    a public address) the nearest public address in X-Forwarded-For (hops to the right of it are
    proxies; what lies left of it the client could have written itself)."""
    peer = ws.client.host if ws.client else ""
    hops = [h.strip() for h in ws.headers.get("x-forwarded-for", "").split(",") if h.strip()]
    if not hops or public(peer):
        return peer
    return next((h for h in reversed(hops) if public(h)), hops[0])


def public(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_global
    except ValueError:
        return False


def span(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 120 else f"{seconds:g} s"


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the limits a public server needs (python -m s2s.serve.converse, app.py)."""
    p.add_argument("--allowed-origins", nargs="+", default=[], metavar="ORIGIN",
                   help="page origins (https://name.example) that may open conversations besides the "
                        "server's own; '*' = any page (default: same origin only)")
    p.add_argument("--turn-head", default=Limits.turn_head, metavar="bundled|none|DIR",
                   help="the end-of-turn and backchannel head (default: the bundled one; none: silence "
                        "alone ends a turn, any speech over a reply stops it)")
    p.add_argument("--max-per-client", type=int, default=Limits.max_per_client,
                   help="conversations at once from one client address")
    p.add_argument("--idle-timeout-s", type=float, default=Limits.idle_timeout_s,
                   help="close a conversation after this long without speech")
    p.add_argument("--max-conversation-s", type=float, default=Limits.max_conversation_s,
                   help="close any conversation after this long")


def limit_flags(args: argparse.Namespace) -> dict:
    """Limits(...) keyword arguments from the flags add_limit_flags added. On a Hugging Face Space
    its own page (https://$SPACE_HOST, which the Space sets) is always let in, whatever Host
    header its proxy passes on."""
    origins = tuple(o for a in args.allowed_origins for o in a.split(",") if o.strip())
    if os.environ.get("SPACE_HOST", "").strip():
        origins += (f"https://{os.environ['SPACE_HOST'].strip()}",)
    return {"allowed_origins": origins, "max_per_client": args.max_per_client,
            "idle_timeout_s": args.idle_timeout_s, "max_conversation_s": args.max_conversation_s,
            "turn_head": args.turn_head}
