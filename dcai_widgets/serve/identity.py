"""Who may label: annotator names, secret links and the key they are derived from.

A team member is identified by a random-looking token in their link, never by a name typed into the URL
(Prodigy's `?session=NAME` and this app's old `?annotator=NAME` let anyone label as anyone). The token is

    token = base64url(HMAC-SHA256(secret, "name\\0generation"))

with a 32-byte `secret` kept in a key file readable only by its owner (mode 0600; beside a SQLite store as
`<store>.key`, for a PostgreSQL URL under ~/.config/dcai-widgets/keys/). The label store keeps only
sha256(token) in its annotator registry (STORE's `add_annotator` / `annotator_for_token_hash`), so a copy
of the store does not let anyone in. Deriving the token instead of drawing it at random makes the links
stable across restarts of the same store without storing them: `serve` recomputes the same link from the
key and the generation whose hash the registry holds. Revoking a name keeps its hash but marks it
revoked; adding the name again moves it to the next generation, so the old link stays dead.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

NAME = re.compile(r"^[\w.@+-][\w .@+-]{0,63}$")  # letters, digits, space . _ - @ +: nothing HTML can use
ROLES = ("annotator", "lead")
_MAX_GENERATIONS = 10_000


@dataclass(frozen=True)
class Member:
    """One person of the team: their name and role ("annotator" or "lead")."""

    name: str
    role: str = "annotator"


@dataclass(frozen=True)
class Link:
    """A member's secret token (to be put in their link) and the role the registry holds for them."""

    name: str
    role: str
    token: str

    def url(self, base_url: str) -> str:
        return f"{base_url}?token={self.token}"


def check_name(name: str, what: str = "annotator name") -> str:
    """`name` stripped, or ValueError naming the rule (the same rule as the app's annotator names)."""
    name = str(name).strip()
    if not NAME.match(name):
        raise ValueError(f"{what} {name!r} is not allowed; use up to 64 letters, digits, spaces or . _ - @ +")
    return name


def token_hash(token: str) -> str:
    """sha256 hex of a token: what the store's registry keeps instead of the token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_annotators(spec: str) -> list[Member]:
    """`"ada,bo,cy"` -> members with role "annotator"; `"ada:lead"` gives a role. Duplicates refused."""
    members = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, role = part.partition(":")
        members.append(Member(check_name(name), _check_role(role.strip() or "annotator", name)))
    return _unique(members, "--annotators")


def load_team(path: str | os.PathLike) -> list[Member]:
    """Members from a TOML file with an `[annotators]` table of `name = "role"` lines."""
    p = Path(path).expanduser()
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"--team file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"--team file {str(p)!r} could not be read as TOML: {e}") from None
    table = data.get("annotators")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"--team file {str(p)!r} needs an [annotators] table of name = \"role\" lines, "
                         "e.g. ada = \"lead\"")
    members = []
    for name, role in table.items():
        if not isinstance(role, str):
            raise ValueError(  # noqa: TRY004 - a user's file: reported like every other bad input
                f"--team file {str(p)!r}: the role of {name!r} must be a string, one of {ROLES}")
        members.append(Member(check_name(name), _check_role(role, name)))
    return _unique(members, f"--team file {str(p)!r}")


def _check_role(role: str, name: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} for {name!r}; use one of {', '.join(ROLES)}")
    return role


def _unique(members: list[Member], where: str) -> list[Member]:
    seen = set()
    for m in members:
        if m.name in seen:
            raise ValueError(f"{where} names {m.name!r} twice")
        seen.add(m.name)
    if not members:
        raise ValueError(f"{where} names nobody")
    return members


# -- the key --------------------------------------------------------------------------------------
def is_url(store: str) -> bool:
    return "://" in str(store)


def default_key_path(store: str) -> Path:
    """`<store>.key` beside a SQLite file; for a URL a file named by the URL's hash (password left out)."""
    if not is_url(store):
        return Path(str(Path(store).expanduser()) + ".key")
    from urllib.parse import urlsplit

    u = urlsplit(store)
    bare = f"{u.scheme}://{u.username or ''}@{u.hostname or ''}:{u.port or ''}{u.path}"
    return Path.home() / ".config" / "dcai-widgets" / "keys" / f"{hashlib.sha256(bare.encode()).hexdigest()[:24]}.key"


def load_key(path: str | os.PathLike, create: bool = True) -> bytes:
    """The 32-byte secret in `path`, made (mode 0600) when missing and `create`. A key file that others
    can read is refused, as ssh refuses such a private key: anyone reading it could make every link."""
    p = Path(path)
    if not p.exists():
        if not create:
            raise ValueError(f"key file {str(p)!r} does not exist; no links were ever made for this store")
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent serve: use theirs
            return load_key(p, create=False)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    mode = stat.S_IMODE(p.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"key file {str(p)!r} can be read by others (mode {mode:o}); run chmod 600 on it")
    text = p.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(f"key file {str(p)!r} is damaged (expected 64 hex digits); remove it to make new "
                         "links (the old ones stop working)")
    return key


def derive_token(secret: bytes, name: str, generation: int) -> str:
    mac = hmac.new(secret, f"{name}\0{generation}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def _generation(secret: bytes, name: str, stored_hash: str | None) -> int | None:
    """The generation whose token hashes to `stored_hash`, or None (no hash, or made with another key)."""
    if not stored_hash:
        return None
    for g in range(_MAX_GENERATIONS):
        if hmac.compare_digest(token_hash(derive_token(secret, name, g)), stored_hash):
            return g
    return None


# -- the registry ---------------------------------------------------------------------------------
def _registry(store: Any) -> dict[str, dict]:
    if not hasattr(store, "annotator_for_token_hash"):
        raise ValueError("this label store has no annotator registry (update dcai-widgets' store)")
    df = store.annotators()
    return {str(r["name"]): dict(r) for r in df.to_dict("records")}


def issue_links(store: Any, secret: bytes, members: list[Member]) -> list[Link]:
    """Register `members` in the store and return their links: the same token as last time for a live
    member, the next generation for a revoked one, generation 0 for a new one."""
    reg = _registry(store)
    links = []
    for m in members:
        row = reg.get(m.name)
        gen = 0
        if row is not None:
            found = _generation(secret, m.name, row.get("token_hash"))
            if found is not None:
                gen = found + 1 if row.get("revoked") else found
        token = derive_token(secret, m.name, gen)
        store.add_annotator(m.name, role=m.role, token_hash=token_hash(token))
        links.append(Link(m.name, m.role, token))
    return links


def live_links(store: Any, secret: bytes) -> list[Link]:
    """Links of every registered, not revoked member whose token this key made."""
    links = []
    for name, row in _registry(store).items():
        if row.get("revoked"):
            continue
        g = _generation(secret, name, row.get("token_hash"))
        if g is not None:
            links.append(Link(name, str(row.get("role") or "annotator"), derive_token(secret, name, g)))
    return links


def live_members(store: Any) -> list[Member]:
    """Every registered member not revoked (empty for a store never served to a team)."""
    if not hasattr(store, "annotator_for_token_hash"):
        return []
    return [Member(n, str(r.get("role") or "annotator")) for n, r in _registry(store).items()
            if not r.get("revoked")]


def revoke(store: Any, name: str) -> bool:
    """Revoke `name`'s link; their labels stay. False when nobody of that name is registered."""
    _registry(store)
    return bool(store.revoke_annotator(name))


def identity_from_query(store: Any, query: str) -> tuple[str, str] | None:
    """(name, role) for the `token=` of a page's query string, or None when absent, unknown or revoked."""
    from urllib.parse import parse_qs

    vals = parse_qs(query.lstrip("?")).get("token")
    if not vals or not vals[0]:
        return None
    return store.annotator_for_token_hash(token_hash(vals[0]))


def open_label_store(spec: str) -> Any:
    """The label store at `spec` (a SQLite path or a postgresql:// URL where the store supports it)."""
    try:
        from ..store import open_store
    except ImportError:  # a store package without open_store: SQLite only
        from ..store import LabelStore

        if is_url(spec):
            raise ValueError(f"--store {spec!r}: this version of the label store opens SQLite files only") from None
        return LabelStore(spec)
    return open_store(spec)
